// A simulated kubelet: registers a Node, runs the first container of each pod bound to it as a local
// process group, reports phases and exit codes, restarts per restartPolicy, and on deletion sends
// SIGTERM, waits the grace period, then SIGKILLs and removes the pod.
import { spawn, type ChildProcess } from 'node:child_process';
import { delimiter } from 'node:path';
import { ApiError, noopLogger, type KObject, type Logger } from './api.js';
import type { TestApiServer } from './server.js';
import type { EventType } from './state.js';

export interface KubeletOptions {
  server: TestApiServer;
  nodeName: string;
  /** Extra environment for every container process (on top of this process's env). */
  env?: Record<string, string>;
  /** Directories put in front of PATH (so that a `tensile` shim resolves). */
  pathPrepend?: string | string[];
  /** Node capacity in pods (default 110); the scheduler leaves extra pods Pending. */
  maxPods?: number;
  labels?: Record<string, string>;
  /** Reported as status.podIP and the node's InternalIP (default 127.0.0.1). */
  podIP?: string;
  /** Working directory of containers without workingDir (default this process's cwd). */
  workDir?: string;
  /**
   * The "image entrypoint" used when a container has args but no command (there are no images here).
   * Without one, args alone are run as the command.
   */
  entrypoint?: (image: string) => string[] | undefined;
  /** First restart delay for restartPolicy Always/OnFailure; doubles up to 10 s (default 100 ms). */
  restartBackoffMs?: number;
  logger?: Logger;
}

export interface Kubelet {
  readonly nodeName: string;
  /** Sets the node's Ready condition (the scheduler only binds to Ready nodes). */
  setReady(ready: boolean): void;
  /** Process ids of the containers running now, by "namespace/name". */
  processes(): Map<string, number>;
  /**
   * Kills every process it started (SIGKILL) and stops acting. With deleteNode the Node object is
   * deleted too (its pods get DisruptionTarget and are removed); otherwise it is marked NotReady.
   */
  stop(opts?: { deleteNode?: boolean }): Promise<void>;
}

interface Tracked {
  ns: string;
  name: string;
  uid: string;
  proc?: ChildProcess;
  exited?: Promise<void>;
  startedAt?: string;
  restarts: number;
  terminating: boolean;
  /** spec.activeDeadlineSeconds passed: stopped for good, phase Failed with reason DeadlineExceeded. */
  deadlineExceeded?: boolean;
  /** Grace period of the SIGKILL timer now armed, in seconds. */
  graceS?: number;
  done: boolean;
  timers: NodeJS.Timeout[];
  log: string;
}

const LOG_LIMIT = 256 * 1024;
const SIGNALS: Record<string, number> = {
  SIGHUP: 1,
  SIGINT: 2,
  SIGKILL: 9,
  SIGTERM: 15,
  SIGABRT: 6,
  SIGSEGV: 11,
  SIGPIPE: 13,
};
const now = (): string => new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');
const rec = (v: unknown): Record<string, unknown> => (v && typeof v === 'object' ? (v as Record<string, unknown>) : {});

export async function startKubelet(opts: KubeletOptions): Promise<Kubelet> {
  const { server, nodeName } = opts;
  const state = server.state;
  const logger = opts.logger ?? noopLogger;
  const podIP = opts.podIP ?? '127.0.0.1';
  const backoffMs = opts.restartBackoffMs ?? 100;
  const podsDef = state.def('', 'pods');
  const nodesDef = state.def('', 'nodes');
  const tracked = new Map<string, Tracked>();
  let stopped = false;
  let nodeGone = false;

  const ignoreGone = (fn: () => void): void => {
    try {
      fn();
    } catch (err) {
      if (!(err instanceof ApiError && (err.httpStatus === 404 || err.httpStatus === 409)))
        logger.error({ err }, 'kubelet: write failed');
    }
  };

  function setStatus(t: Tracked, mutate: (status: Record<string, unknown>, pod: KObject) => void): void {
    if (stopped) return;
    ignoreGone(() => {
      const pod = state.get(podsDef, t.ns, t.name);
      if (pod.metadata.uid !== t.uid) return;
      const status = rec(pod.status);
      mutate(status, pod);
      pod.status = status;
      delete pod.metadata.resourceVersion;
      state.update(podsDef, t.ns, t.name, pod, 'status');
    });
  }

  function nodeObject(ready: boolean): KObject {
    const pods = String(opts.maxPods ?? 110);
    return {
      apiVersion: 'v1',
      kind: 'Node',
      metadata: {
        name: nodeName,
        labels: { 'kubernetes.io/hostname': nodeName, 'kubernetes.io/os': 'linux', ...(opts.labels ?? {}) },
      },
      spec: {},
      status: {
        capacity: { pods, cpu: '2', memory: '8Gi' },
        allocatable: { pods, cpu: '2', memory: '8Gi' },
        conditions: [
          {
            type: 'Ready',
            status: ready ? 'True' : 'False',
            reason: ready ? 'KubeletReady' : 'KubeletNotReady',
            message: ready ? 'kubelet is posting ready status' : 'kubelet stopped',
            lastHeartbeatTime: now(),
            lastTransitionTime: now(),
          },
        ],
        addresses: [
          { type: 'InternalIP', address: podIP },
          { type: 'Hostname', address: nodeName },
        ],
        nodeInfo: { kubeletVersion: 'v1.32.0-tensile-test', operatingSystem: 'linux', architecture: 'amd64' },
      },
    };
  }

  function setReady(ready: boolean): void {
    const existing = state.tryGet(nodesDef, undefined, nodeName);
    if (!existing) {
      state.create(nodesDef, undefined, nodeObject(ready));
      return;
    }
    const next = {
      ...existing,
      status: { ...rec(existing.status), conditions: rec(nodeObject(ready).status).conditions },
    };
    delete next.metadata.resourceVersion;
    ignoreGone(() => state.update(nodesDef, undefined, nodeName, next, 'status'));
  }

  function resolveEnv(pod: KObject, container: Record<string, unknown>): Record<string, string> {
    const env: Record<string, string> = { ...(process.env as Record<string, string>), ...(opts.env ?? {}) };
    const prepend =
      opts.pathPrepend === undefined ? [] : Array.isArray(opts.pathPrepend) ? opts.pathPrepend : [opts.pathPrepend];
    if (prepend.length > 0) env.PATH = [...prepend, env.PATH ?? ''].join(delimiter);
    env.HOSTNAME = pod.metadata.name!;
    const ns = pod.metadata.namespace!;
    for (const e of (container.env ?? []) as Array<Record<string, unknown>>) {
      const name = String(e.name);
      if (typeof e.value === 'string') {
        env[name] = e.value.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (m, v: string) => env[v] ?? m);
        continue;
      }
      const vf = rec(e.valueFrom);
      if (vf.fieldRef) {
        const path = String(rec(vf.fieldRef).fieldPath);
        const m = path.match(/^metadata\.(labels|annotations)\['(.+)'\]$/);
        if (m) env[name] = pod.metadata[m[1] as 'labels' | 'annotations']?.[m[2]] ?? '';
        else if (path === 'status.podIP' || path === 'status.hostIP') env[name] = podIP;
        else {
          let cur: unknown = pod;
          for (const s of path.split('.')) cur = rec(cur)[s];
          env[name] = cur === undefined ? '' : String(cur);
        }
      } else if (vf.configMapKeyRef || vf.secretKeyRef) {
        const ref = rec(vf.configMapKeyRef ?? vf.secretKeyRef);
        const def = state.def('', vf.configMapKeyRef ? 'configmaps' : 'secrets');
        const o = state.tryGet(def, ns, String(ref.name));
        const v = rec(o?.data)[String(ref.key)];
        if (typeof v === 'string') env[name] = vf.secretKeyRef ? Buffer.from(v, 'base64').toString('utf8') : v;
      }
    }
    return env;
  }

  function containerStatus(
    pod: KObject,
    t: Tracked,
    state_: Record<string, unknown>,
    ready: boolean,
    last?: Record<string, unknown>,
  ): Record<string, unknown> {
    const c = rec(((rec(pod.spec).containers ?? []) as unknown[])[0]);
    return {
      name: c.name,
      image: c.image,
      imageID: '',
      containerID: t.proc?.pid ? `tensile://${t.proc.pid}` : undefined,
      ready,
      started: ready,
      restartCount: t.restarts,
      state: state_,
      ...(last ? { lastState: last } : {}),
    };
  }

  function conditions(ready: boolean): Array<Record<string, unknown>> {
    const s = ready ? 'True' : 'False';
    return [
      { type: 'PodReadyToStartContainers', status: 'True', lastTransitionTime: now() },
      { type: 'Initialized', status: 'True', lastTransitionTime: now() },
      { type: 'Ready', status: s, lastTransitionTime: now() },
      { type: 'ContainersReady', status: s, lastTransitionTime: now() },
      { type: 'PodScheduled', status: 'True', lastTransitionTime: now() },
    ];
  }

  function mergeConditions(status: Record<string, unknown>, conds: Array<Record<string, unknown>>): void {
    const keep = ((status.conditions ?? []) as Array<Record<string, unknown>>).filter(
      (c) => !conds.some((n) => n.type === c.type),
    );
    status.conditions = [...keep, ...conds];
  }

  function run(t: Tracked): void {
    if (stopped || t.terminating || t.done) return;
    const pod = state.tryGet(podsDef, t.ns, t.name);
    if (!pod || pod.metadata.uid !== t.uid) return;
    const c = rec(((rec(pod.spec).containers ?? []) as unknown[])[0]);
    const command = (c.command ?? []) as string[];
    const entry = command.length > 0 ? command : (opts.entrypoint?.(String(c.image ?? '')) ?? []);
    const argv = [...entry, ...((c.args ?? []) as string[])];
    t.startedAt = now();
    const deadlineS = rec(pod.spec).activeDeadlineSeconds;
    if (t.restarts === 0 && typeof deadlineS === 'number' && deadlineS >= 0)
      t.timers.push(setTimeout(() => exceedDeadline(t), deadlineS * 1000));
    if (argv.length === 0) {
      // No command: a container that runs until it is stopped, with nothing to execute locally.
      setStatus(t, (st, p) => {
        st.phase = 'Running';
        st.podIP = podIP;
        st.podIPs = [{ ip: podIP }];
        st.hostIP = podIP;
        st.startTime ??= t.startedAt;
        st.containerStatuses = [containerStatus(p, t, { running: { startedAt: t.startedAt } }, true)];
        mergeConditions(st, conditions(true));
      });
      return;
    }
    let child: ChildProcess;
    try {
      child = spawn(argv[0], argv.slice(1), {
        env: resolveEnv(pod, c),
        cwd: typeof c.workingDir === 'string' ? c.workingDir : (opts.workDir ?? process.cwd()),
        detached: true,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
    } catch (err) {
      return exited(t, 127, 'StartError', String(err));
    }
    t.proc = child;
    const append = (b: Buffer): void => {
      t.log += b.toString('utf8');
      if (t.log.length > LOG_LIMIT) t.log = t.log.slice(-LOG_LIMIT);
    };
    child.stdout?.on('data', append);
    child.stderr?.on('data', append);
    let finished = false;
    t.exited = new Promise<void>((resolve) => {
      const finish = (code: number, reason: string, message?: string): void => {
        if (finished) return;
        finished = true;
        t.proc = undefined;
        resolve();
        exited(t, code, reason, message);
      };
      child.once('error', (err) => finish(127, 'StartError', err.message));
      child.once('exit', (code, signal) => {
        const exitCode = code ?? 128 + (SIGNALS[signal ?? ''] ?? 9);
        finish(exitCode, exitCode === 0 ? 'Completed' : 'Error');
      });
    });
    child.once('spawn', () => {
      logger.debug({ pod: `${t.ns}/${t.name}`, pid: child.pid }, 'kubelet: container started');
      setStatus(t, (st, p) => {
        st.phase = 'Running';
        st.podIP = podIP;
        st.podIPs = [{ ip: podIP }];
        st.hostIP = podIP;
        st.startTime ??= t.startedAt;
        const prev = ((st.containerStatuses ?? []) as Array<Record<string, unknown>>)[0];
        st.containerStatuses = [
          containerStatus(
            p,
            t,
            { running: { startedAt: t.startedAt } },
            true,
            prev?.lastState as Record<string, unknown> | undefined,
          ),
        ];
        mergeConditions(st, conditions(true));
      });
    });
  }

  function exited(t: Tracked, exitCode: number, reason: string, message?: string): void {
    if (stopped) return;
    const terminated = { exitCode, reason, ...(message ? { message } : {}), startedAt: t.startedAt, finishedAt: now() };
    const pod = state.tryGet(podsDef, t.ns, t.name);
    if (!pod || pod.metadata.uid !== t.uid) {
      tracked.delete(t.uid);
      return;
    }
    const policy = String(rec(pod.spec).restartPolicy ?? 'Always');
    const restart =
      !t.terminating && !t.deadlineExceeded && (policy === 'Always' || (policy === 'OnFailure' && exitCode !== 0));
    if (restart) {
      t.restarts++;
      const delay = Math.min(backoffMs * 2 ** (t.restarts - 1), 10_000);
      setStatus(t, (st, p) => {
        st.containerStatuses = [
          containerStatus(
            p,
            t,
            { waiting: { reason: 'CrashLoopBackOff', message: `back-off ${delay}ms restarting failed container` } },
            false,
            { terminated },
          ),
        ];
        mergeConditions(
          st,
          conditions(false).filter((c) => c.type === 'Ready' || c.type === 'ContainersReady'),
        );
      });
      t.timers.push(setTimeout(() => run(t), delay));
      return;
    }
    t.done = true;
    setStatus(t, (st, p) => {
      st.phase = exitCode === 0 && !t.deadlineExceeded ? 'Succeeded' : 'Failed';
      if (t.deadlineExceeded) {
        st.reason = 'DeadlineExceeded';
        st.message = 'Pod was active on the node longer than the specified deadline';
      }
      st.containerStatuses = [containerStatus(p, t, { terminated }, false)];
      mergeConditions(
        st,
        conditions(false).filter((c) => c.type === 'Ready' || c.type === 'ContainersReady'),
      );
    });
    if (t.terminating) finishDeletion(t);
  }

  /** activeDeadlineSeconds: stop the container (SIGTERM, SIGKILL after the pod's grace period) and fail the pod. */
  function exceedDeadline(t: Tracked): void {
    if (t.done || t.terminating || stopped) return;
    t.deadlineExceeded = true;
    for (const tm of t.timers) clearTimeout(tm);
    t.timers = [];
    const pid = t.proc?.pid;
    if (pid) {
      kill(pid, 'SIGTERM');
      const pod = state.tryGet(podsDef, t.ns, t.name);
      const graceS = Number(rec(pod?.spec).terminationGracePeriodSeconds ?? 30);
      t.timers.push(setTimeout(() => kill(pid, 'SIGKILL'), graceS * 1000));
    } else exited(t, 137, 'DeadlineExceeded');
  }

  function finishDeletion(t: Tracked): void {
    for (const tm of t.timers) clearTimeout(tm);
    tracked.delete(t.uid);
    ignoreGone(() => state.forceDeletePod(t.ns, t.name));
  }

  function kill(pid: number | undefined, sig: NodeJS.Signals): void {
    if (!pid) return;
    try {
      process.kill(-pid, sig);
    } catch {
      try {
        process.kill(pid, sig);
      } catch {
        /* already gone */
      }
    }
  }

  function terminate(t: Tracked, graceS: number): void {
    if (t.terminating) return;
    t.terminating = true;
    for (const tm of t.timers) clearTimeout(tm);
    t.timers = [];
    if (t.proc?.pid) {
      kill(t.proc.pid, 'SIGTERM');
      const pid = t.proc.pid;
      t.graceS = graceS;
      t.timers.push(setTimeout(() => kill(pid, 'SIGKILL'), Math.max(0, graceS * 1000)));
      return;
    }
    if (!t.done) {
      // Nothing running (no command, or waiting to restart): it stops at once.
      t.done = true;
      setStatus(t, (st, p) => {
        if (st.phase !== 'Succeeded' && st.phase !== 'Failed')
          st.phase = t.startedAt && t.restarts === 0 ? 'Succeeded' : 'Failed';
        st.containerStatuses = [
          containerStatus(
            p,
            t,
            { terminated: { exitCode: 0, reason: 'Completed', startedAt: t.startedAt, finishedAt: now() } },
            false,
          ),
        ];
      });
    }
    finishDeletion(t);
  }

  function onPod(type: EventType, pod: KObject): void {
    if (stopped) return;
    const uid = pod.metadata.uid!;
    const t = tracked.get(uid);
    if (type === 'DELETED') {
      if (t) {
        t.terminating = true;
        t.done = true;
        for (const tm of t.timers) clearTimeout(tm);
        kill(t.proc?.pid, 'SIGKILL');
        tracked.delete(uid);
      }
      return;
    }
    if (rec(pod.spec).nodeName !== nodeName || nodeGone) return;
    const phase = rec(pod.status).phase;
    if (!t) {
      if (phase === 'Succeeded' || phase === 'Failed') {
        if (pod.metadata.deletionTimestamp)
          ignoreGone(() => state.forceDeletePod(pod.metadata.namespace!, pod.metadata.name!));
        return;
      }
      const nt: Tracked = {
        ns: pod.metadata.namespace!,
        name: pod.metadata.name!,
        uid,
        restarts: 0,
        terminating: false,
        done: false,
        timers: [],
        log: '',
      };
      tracked.set(uid, nt);
      if (pod.metadata.deletionTimestamp) return terminate(nt, 0);
      run(nt);
      return;
    }
    if (pod.metadata.deletionTimestamp && !t.terminating) {
      // Like the real kubelet, the grace period counts from when the kubelet sees the deletion.
      terminate(t, Math.max(0, Number(pod.metadata.deletionGracePeriodSeconds ?? 30)));
    } else if (pod.metadata.deletionTimestamp && t.terminating && t.proc?.pid) {
      // A second delete with a shorter grace period shortens the wait for SIGKILL.
      const grace = Number(pod.metadata.deletionGracePeriodSeconds ?? 30);
      if (t.graceS !== undefined && grace < t.graceS) {
        for (const tm of t.timers) clearTimeout(tm);
        const pid = t.proc.pid;
        t.graceS = grace;
        t.timers = [setTimeout(() => kill(pid, 'SIGKILL'), grace * 1000)];
      }
    }
  }

  const listener = (key: string, type: EventType, obj: KObject): void => {
    // Listeners run inside the state's commit; act after it returns.
    if (key === '/pods') setImmediate(() => onPod(type, obj));
    else if (key === '/nodes' && obj.metadata.name === nodeName)
      setImmediate(() => {
        if (stopped) return;
        if (type === 'DELETED') {
          nodeGone = true;
          for (const t of tracked.values()) {
            t.done = true;
            t.terminating = true;
            for (const tm of t.timers) clearTimeout(tm);
            kill(t.proc?.pid, 'SIGKILL');
          }
          tracked.clear();
        } else if (type === 'ADDED') {
          nodeGone = false;
          for (const p of state.list(podsDef)) onPod('ADDED', p);
        }
      });
  };
  state.listeners.add(listener);
  const logSource = (ns: string, name: string): string | undefined => {
    for (const t of tracked.values()) if (t.ns === ns && t.name === name) return t.log;
    return undefined;
  };
  server.logSources.add(logSource);
  setReady(true);
  for (const p of state.list(podsDef)) onPod('ADDED', p);

  return {
    nodeName,
    setReady,
    processes(): Map<string, number> {
      const m = new Map<string, number>();
      for (const t of tracked.values()) if (t.proc?.pid) m.set(`${t.ns}/${t.name}`, t.proc.pid);
      return m;
    },
    async stop(o = {}): Promise<void> {
      if (stopped) return;
      state.listeners.delete(listener);
      server.logSources.delete(logSource);
      const waits: Array<Promise<void>> = [];
      for (const t of tracked.values()) {
        for (const tm of t.timers) clearTimeout(tm);
        if (t.proc?.pid && t.exited) {
          kill(t.proc.pid, 'SIGKILL');
          waits.push(t.exited);
        }
      }
      stopped = true;
      await Promise.race([Promise.all(waits), new Promise((r) => setTimeout(r, 5000).unref())]);
      tracked.clear();
      try {
        if (o.deleteNode) state.delete(nodesDef, undefined, nodeName);
        else setReady(false);
      } catch {
        /* the server may be gone already */
      }
    },
  };
}
