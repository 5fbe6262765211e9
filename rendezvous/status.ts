// Read-only job status for `tensile status`: what the job's etcd keys say, once or as a live stream.
import type { JobStatus } from './api.js';
import { parseRdzvConf } from './config.js';
import type { EtcdConnection } from './etcd-backend.js';
import { jobPrefix } from './job-keys.js';
import { JobView, statusFromView } from './job-view.js';
import type { KvEntry } from './kv.js';

export { statusFromView };

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
  const view = new JobView(jobPrefix(runId));
  view.load(entries);
  return statusFromView(runId, view);
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
    const view = new JobView(jobPrefix(q.runId));
    const sub = await conn.subscribe(view.prefix, (events) => view.applyBatch(events));
    view.load(sub.entries);
    let last = '';
    const emit = (): void => {
      const s = statusFromView(q.runId, view);
      const json = JSON.stringify(s);
      if (json === last) return;
      last = json;
      onStatus(s);
    };
    const unlisten = view.onChange(emit);
    emit();
    await new Promise<void>((resolve) => {
      if (q.signal?.aborted) resolve();
      q.signal?.addEventListener('abort', () => resolve(), { once: true });
    });
    unlisten();
    sub.unsubscribe();
  } finally {
    conn.close();
  }
}
