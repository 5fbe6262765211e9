// Read-only job status for `tensile status`: what the job's etcd keys say, once or as a live stream.
import type { JobStatus, NodeDescriptor } from './api.js';
import { parseRdzvConf } from './config.js';
import type { EtcdConnection } from './etcd-backend.js';
import type { KvEntry } from './kv.js';
import { parseEntry } from './kv.js';
import { type NodeDoc, type StateDoc, jobPrefix } from './kv-handler.js';
import { assignGroupRanks } from './policy.js';

export interface JobStatusQuery {
  /** etcd `host:port[,host:port...]`. */
  readonly endpoint: string;
  readonly runId: string;
  /** `--rdzv-conf` keys: read_timeout, and TLS/auth (cacert, cert, key, user, password_file, password_env). */
  readonly conf?: Readonly<Record<string, string>>;
}

/**
 * Builds a JobStatus from the job's keys (pure). While a round is joining, `members` lists the nodes joined so far
 * with the ranks they would get if it closed now; `waiting` lists nodes that arrived during a running round.
 */
export function statusFromEntries(runId: string, entries: Iterable<KvEntry>): JobStatus {
  const prefix = jobPrefix(runId);
  let doc: StateDoc | null = null;
  const nodes: { doc: NodeDoc; modRevision: number }[] = [];
  for (const e of entries) {
    if (e.key === `${prefix}state`) doc = (parseEntry(e) as StateDoc | undefined) ?? null;
    else if (e.key.startsWith(`${prefix}nodes/`)) {
      const n = parseEntry(e) as NodeDoc | undefined;
      if (n && typeof n.round === 'number') nodes.push({ doc: n, modRevision: e.modRevision });
    }
  }
  if (doc === null) return { runId, round: null, state: 'unknown', members: [], waiting: [], failureRestarts: 0 };
  nodes.sort((a, b) => a.modRevision - b.modRevision);
  const base = {
    runId,
    round: doc.round,
    failureRestarts: doc.failureRestarts,
    minNodes: doc.minNodes,
    maxNodes: doc.maxNodes,
  };
  const waiting: NodeDescriptor[] = nodes.filter((n) => n.doc.round > doc.round).map((n) => n.doc.node);
  if (doc.closed) return { ...base, state: 'closed', members: doc.phase === 'running' ? doc.members : [], waiting: [] };
  if (doc.phase === 'running') return { ...base, state: 'running', members: doc.members, waiting };
  const joined = nodes.filter((n) => n.doc.round === doc.round).map((n) => n.doc.node);
  return { ...base, state: 'joining', members: assignGroupRanks(joined, doc.members, doc.maxNodes), waiting };
}

async function connect(q: JobStatusQuery): Promise<EtcdConnection> {
  const { backendOptions, config } = parseRdzvConf(q.conf ?? {}, {
    runId: q.runId,
    minNodes: 1,
    maxNodes: 1,
    endpoint: q.endpoint,
  });
  const { openEtcdConnection } = await import('./etcd-backend.js');
  return openEtcdConnection(backendOptions, config.readTimeoutMs);
}

/** Reads the job's status once. Throws RendezvousConfigError / RendezvousConnectionError naming the problem. */
export async function getJobStatus(q: JobStatusQuery): Promise<JobStatus> {
  const conn = await connect(q);
  try {
    const res = await conn.client.getAll().prefix(jobPrefix(q.runId)).exec();
    return statusFromEntries(
      q.runId,
      res.kvs.map((kv) => ({
        key: kv.key.toString(),
        value: kv.value.toString(),
        modRevision: Number(kv.mod_revision),
      })),
    );
  } catch (err) {
    throw conn.connectionError(err);
  } finally {
    conn.close();
  }
}

/**
 * Calls `onStatus` with the current status and again after every change (by watch, not polling; repeated
 * identical statuses are skipped) until `signal` aborts; then resolves.
 */
export async function watchJobStatus(
  q: JobStatusQuery & { readonly signal?: AbortSignal },
  onStatus: (s: JobStatus) => void,
): Promise<void> {
  if (q.signal?.aborted) return;
  const conn = await connect(q);
  try {
    const entries = new Map<string, KvEntry>();
    let last = '';
    const emit = (): void => {
      const s = statusFromEntries(q.runId, entries.values());
      const json = JSON.stringify(s);
      if (json === last) return;
      last = json;
      onStatus(s);
    };
    const sub = await conn.subscribe(jobPrefix(q.runId), (events) => {
      for (const e of events) {
        if (e.type === 'put') entries.set(e.key, e);
        else entries.delete(e.key);
      }
      emit();
    });
    for (const e of sub.entries) entries.set(e.key, e);
    emit();
    await new Promise<void>((resolve) => {
      if (q.signal?.aborted) resolve();
      q.signal?.addEventListener('abort', () => resolve(), { once: true });
    });
    sub.unsubscribe();
  } finally {
    conn.close();
  }
}
