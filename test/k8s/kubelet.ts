// A simulated kubelet: registers a Node, runs the first container of each pod bound to it as a local
// process group, reports phases and exit codes, restarts per restartPolicy, and on deletion sends
// SIGTERM, waits the grace period, then SIGKILLs and removes the pod.
//
// Container mode (`containers`): each pod runs from its image with buildah (`buildah from` + `buildah run`,
// chroot isolation, host network) with the image's entrypoint/cmd/user/workdir/env and the pod's command, args,
// env, securityContext user and volume mounts. It reports what the real kubelet reports for containerd: an image
// that is not in local storage leaves the pod Pending with ErrImagePull / ImagePullBackOff (retried); a command
// that does not exist in the image terminates the container with StartError (exit 128) and waits with
// RunContainerError before a restart. SIGTERM goes to the container's first process only (as the real kubelet
// signals PID 1: tini forwards it to the agent, the agent to the workers); SIGKILL after the grace period goes to
// every process of the container. Each working container is removed (`buildah rm`) when its process exits and
// on stop(); leftovers of an earlier run of the same node are removed at start.
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdirSync, rmSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { ApiError, noopLogger, type KObject, type Logger } from './api.js';
import {
  buildah,
  containerExit,
  containerInit,
  descendants,
  resolveExecutable,
  type Buildah,
  type ImageConfig,
} from './buildah.js';
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
  /** Run pods from their images with buildah instead of as local processes (see the top of this file). */
  containers?: ContainerModeOptions;
}

export interface ContainerModeOptions {
  /**
   * Image name in the pod spec → local image (e.g. 'ghcr.io/tensile/agent:0.1.0' → 'localhost/tensile/agent:0.1.0').
   * Names not in the map are looked up as they are; an image not in local storage is ErrImagePull.
   */
  images?: Record<string, string>;
  /** buildah storage driver (default overlay). */
  storageDriver?: string;
  /**
   * Host directory for volumes: emptyDir → <volumeDir>/pods/<uid>/<volume> (removed with the pod);
   * persistentVolumeClaim → <volumeDir>/claims/<namespace>/<claim> (shared by every pod, like ReadWriteMany).
   * hostPath volumes mount their path as is. All are mode 0777, as emptyDir is.
   */
  volumeDir: string;
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
  /** Container mode: the working container of the current run, its image id, image-pull failures so far. */
  container?: string;
  /** The container id reported in the status (kept after the working container is removed). */
  containerRef?: string;
  imageId?: string;
  pullFailures: number;
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
  const cm = opts.containers;
  const rt: Buildah | undefined = cm ? buildah(cm.storageDriver) : undefined;
  /** Working containers are named <prefix><pod>-<uid prefix>-<restarts> (unique per node and run). */
  const ctrPrefix = `tensile-kubelet-${nodeName}-`;
  /** buildah rm of exited containers, awaited by stop(). */
  const removals = new Set<Promise<void>>();
  if (rt) {
    for (const name of await rt.containers(ctrPrefix)) await rt.rm(name);
  }

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

  /** The container's environment: `base` (this process's env, or the image's in container mode), then the pod's. */
  function resolveEnv(
    pod: KObject,
    container: Record<string, unknown>,
    base: Record<string, string> = process.env as Record<string, string>,
  ): Record<string, string> {
    const env: Record<string, string> = { ...base, ...(opts.env ?? {}) };
    const prepend =
      opts.pathPrepend === undefined || cm
        ? []
        : Array.isArray(opts.pathPrepend)
          ? opts.pathPrepend
          : [opts.pathPrepend];
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
      imageID: t.imageId ?? '',
      containerID: t.containerRef ? `buildah://${t.containerRef}` : t.proc?.pid ? `tensile://${t.proc.pid}` : undefined,
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
    if (rt) {
      runContainer(t, pod, c, rt).catch((err: unknown) => {
        logger.error({ err, pod: `${t.ns}/${t.name}` }, 'kubelet: container start failed');
        release(t);
        exited(t, 128, 'StartError', String((err as Error).message ?? err), 'RunContainerError');
      });
      return;
    }
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
    startProcess(t, argv, {
      env: resolveEnv(pod, c),
      cwd: typeof c.workingDir === 'string' ? c.workingDir : (opts.workDir ?? process.cwd()),
    });
  }

  /** Spawns argv as the pod's process (a process group of its own) and reports it Running, then its exit. */
  function startProcess(t: Tracked, argv: string[], o: { env?: Record<string, string>; cwd?: string }): void {
    let child: ChildProcess;
    try {
      child = spawn(argv[0]!, argv.slice(1), { ...o, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
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
        let exitCode = code ?? 128 + (SIGNALS[signal ?? ''] ?? 9);
        if (rt && code !== null) ({ exitCode, output: t.log } = containerExit(code, t.log));
        release(t);
        finish(exitCode, exitCode === 0 ? 'Completed' : 'Error');
      });
    });
    child.once('spawn', () => whenStarted(child, () => running(t, child)));
  }

  /** Calls fn once the container's command runs (container mode: buildah has set it up), or at once. */
  function whenStarted(child: ChildProcess, fn: () => void): void {
    if (!rt || child.exitCode !== null || child.signalCode !== null) return fn();
    if (containerInit(child.pid!) !== undefined) return fn();
    setTimeout(() => whenStarted(child, fn), 50).unref();
  }

  function running(t: Tracked, child: ChildProcess): void {
    if (t.proc !== child) return;
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
  }

  /**
   * Container mode: makes a working container of the pod's image and runs the container in it. Pending with
   * ErrImagePull / ImagePullBackOff while the image is not in local storage; StartError when the command is not in
   * the image; CreateContainerConfigError for a volume it cannot provide.
   */
  async function runContainer(t: Tracked, pod: KObject, c: Record<string, unknown>, b: Buildah): Promise<void> {
    const image = String(c.image ?? '');
    const local = cm!.images?.[image] ?? image;
    const cfg = await b.inspectImage(local);
    if (t.terminating || t.done || stopped) return;
    if (!cfg) return imagePullFailed(t, image, local);
    t.pullFailures = 0;
    t.imageId = cfg.id;
    const spec = rec(pod.spec);
    const volumes = containerVolumes(t, pod, c);
    if (typeof volumes === 'string') return waiting(t, 'CreateContainerConfigError', volumes, true);
    const command = (c.command ?? []) as string[];
    const args = (c.args ?? []) as string[];
    // Kubernetes: command replaces the entrypoint (and drops the image's cmd); args replace the cmd.
    const argv =
      command.length > 0 ? [...command, ...args] : [...cfg.entrypoint, ...(c.args !== undefined ? args : cfg.cmd)];
    const env = resolveEnv(pod, c, { ...cfg.env });
    const workingDir = typeof c.workingDir === 'string' ? c.workingDir : cfg.workingDir || '/';
    const user = containerUser(spec, c, cfg);
    const name = `${ctrPrefix}${t.name}-${t.uid.slice(0, 8)}-${t.restarts}`.replace(/[^a-zA-Z0-9_.-]/g, '-');
    t.startedAt = now();
    const deadlineS = spec.activeDeadlineSeconds;
    if (t.restarts === 0 && typeof deadlineS === 'number' && deadlineS >= 0)
      t.timers.push(setTimeout(() => exceedDeadline(t), deadlineS * 1000));
    t.container = await b.from(local, name);
    t.containerRef = t.container;
    if (t.terminating || t.done || stopped) return release(t);
    const root = await b.mount(t.container);
    if (t.terminating || t.done || stopped) return release(t);
    if (argv.length === 0 || resolveExecutable(root, argv[0]!, env.PATH ?? '', workingDir) === undefined) {
      release(t);
      const what =
        argv.length === 0 ? 'no command specified' : `exec: "${argv[0]}": executable file not found in $PATH`;
      return exited(
        t,
        128,
        'StartError',
        `failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: ${what}: unknown`,
        'RunContainerError',
      );
    }
    startProcess(t, b.runArgv(t.container, { command: argv, env, user, workingDir, mounts: volumes }), {});
  }

  /** The user the container runs as: securityContext runAsUser/runAsGroup (container, then pod) over the image's. */
  function containerUser(spec: Record<string, unknown>, c: Record<string, unknown>, cfg: ImageConfig): string {
    const sc = { ...rec(spec.securityContext), ...rec(c.securityContext) };
    const [imgUser = '', imgGroup] = cfg.user.split(':');
    const u = typeof sc.runAsUser === 'number' ? String(sc.runAsUser) : imgUser;
    const g = typeof sc.runAsGroup === 'number' ? String(sc.runAsGroup) : imgGroup;
    return u === '' ? '' : g !== undefined ? `${u}:${g}` : u;
  }

  /** Host directories for the container's volumeMounts, or a message naming the volume it cannot provide. */
  function containerVolumes(
    t: Tracked,
    pod: KObject,
    c: Record<string, unknown>,
  ): Array<{ host: string; container: string; readOnly?: boolean }> | string {
    const vols = (rec(pod.spec).volumes ?? []) as Array<Record<string, unknown>>;
    const out: Array<{ host: string; container: string; readOnly?: boolean }> = [];
    for (const m of (c.volumeMounts ?? []) as Array<Record<string, unknown>>) {
      const v = vols.find((x) => x.name === m.name);
      if (!v) return `spec.containers[0].volumeMounts: volume "${String(m.name)}" is not in spec.volumes`;
      let host: string;
      if (v.hostPath) host = String(rec(v.hostPath).path);
      else if (v.emptyDir) host = join(cm!.volumeDir, 'pods', t.uid, String(v.name));
      else if (v.persistentVolumeClaim)
        host = join(cm!.volumeDir, 'claims', t.ns, String(rec(v.persistentVolumeClaim).claimName));
      else
        return `volume "${String(v.name)}": only hostPath, emptyDir and persistentVolumeClaim volumes are supported here`;
      mkdirSync(host, { recursive: true });
      if (!v.hostPath) chmodSync(host, 0o777);
      out.push({ host, container: String(m.mountPath), ...(m.readOnly === true ? { readOnly: true } : {}) });
    }
    return out;
  }

  /** Sets the container waiting (pod not ready); with retry, runs it again after the restart back-off. */
  function waiting(t: Tracked, reason: string, message: string, retry: boolean): void {
    setStatus(t, (st, p) => {
      st.containerStatuses = [containerStatus(p, t, { waiting: { reason, message } }, false)];
      mergeConditions(
        st,
        conditions(false).filter((c) => c.type === 'Ready' || c.type === 'ContainersReady'),
      );
    });
    if (retry) t.timers.push(setTimeout(() => run(t), Math.min(backoffMs * 2 ** t.restarts, 10_000)));
  }

  /** The image is not in local storage: ErrImagePull now, ImagePullBackOff while waiting to try again. */
  function imagePullFailed(t: Tracked, image: string, local: string): void {
    t.pullFailures++;
    const delay = Math.min(backoffMs * 2 ** (t.pullFailures - 1), 10_000);
    const mapped = local === image ? '' : ` (mapped to "${local}")`;
    waiting(
      t,
      'ErrImagePull',
      `failed to pull and unpack image "${image}"${mapped}: not found in local storage and no registry is reachable`,
      false,
    );
    t.timers.push(
      setTimeout(() => waiting(t, 'ImagePullBackOff', `Back-off pulling image "${image}"`, false), delay / 2),
      setTimeout(() => run(t), delay),
    );
  }

  /** Forgets the pod's working container and removes it (stop() awaits the removal). */
  function release(t: Tracked): void {
    const name = t.container;
    if (!rt || name === undefined) return;
    t.container = undefined;
    const p = rt
      .rm(name)
      .catch((err: unknown) => logger.error({ err, container: name }, 'kubelet: buildah rm failed'))
      .finally(() => removals.delete(p));
    removals.add(p);
  }

  function exited(t: Tracked, exitCode: number, reason: string, message?: string, waitingReason?: string): void {
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
            {
              waiting: {
                reason: waitingReason ?? 'CrashLoopBackOff',
                message: waitingReason ? (message ?? reason) : `back-off ${delay}ms restarting failed container`,
              },
            },
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
    release(t);
    if (cm) rmSync(join(cm.volumeDir, 'pods', t.uid), { recursive: true, force: true });
    ignoreGone(() => state.forceDeletePod(t.ns, t.name));
  }

  /**
   * Container mode: signals the container's first process; while buildah is still setting the container up (no
   * such process yet), tries again every 100 ms for as long as `buildah run` (pid) lives.
   */
  function signalInit(pid: number, sig: NodeJS.Signals): void {
    const init = containerInit(pid);
    if (init !== undefined) {
      try {
        process.kill(init, sig);
      } catch {
        /* already gone */
      }
      return;
    }
    try {
      process.kill(pid, 0);
    } catch {
      return;
    }
    setTimeout(() => signalInit(pid, sig), 100).unref();
  }

  /**
   * Signals a pod's process group. In container mode `pid` is `buildah run`: SIGTERM goes to the container's first
   * process alone (the real kubelet signals PID 1, which forwards it), anything else to every process of it.
   */
  function kill(pid: number | undefined, sig: NodeJS.Signals): void {
    if (!pid) return;
    if (rt) {
      if (sig === 'SIGTERM') return signalInit(pid, sig);
      for (const p of [...descendants(pid).reverse(), pid]) {
        try {
          process.kill(p, sig);
        } catch {
          /* already gone */
        }
      }
    }
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
        pullFailures: 0,
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
      for (const t of tracked.values()) release(t);
      await Promise.all([...removals]);
      if (rt) for (const name of await rt.containers(ctrPrefix).catch(() => [])) await rt.rm(name).catch(() => {});
      if (cm)
        for (const t of tracked.values()) rmSync(join(cm.volumeDir, 'pods', t.uid), { recursive: true, force: true });
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
