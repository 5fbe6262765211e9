// The narrow key-value face the rendezvous handler drives: etcd v3 primitives (revisions, one lease per handler,
// transactions comparing mod revisions, prefix watches). `etcd-backend.ts` maps it onto etcd; `embedded-backend.ts`
// keeps the same semantics in process memory. The handler's logic (`kv-handler.ts`) is shared by both.
import type { JobView } from './job-view.js';

export interface KvEntry {
  readonly key: string;
  readonly value: string;
  /** Revision of the last write to this key (etcd's mod_revision). */
  readonly modRevision: number;
}

export interface KvEvent extends KvEntry {
  readonly type: 'put' | 'delete';
}

export interface KvTxn {
  /** Every compare must hold (modRevision 0 = the key is absent) for the writes to apply. */
  readonly compares: readonly { readonly key: string; readonly modRevision: number }[];
  /** Puts; `leased` attaches the key to this handler's lease. */
  readonly puts: readonly { readonly key: string; readonly value: string; readonly leased?: boolean }[];
  readonly deletes: readonly string[];
}

export type KvConnectionEvent =
  | { readonly type: 'lost'; readonly error: Error }
  | { readonly type: 'restored' }
  /** The lease expired or was revoked by the server: leased keys are gone and a new lease is in place. */
  | { readonly type: 'lease-renewed' };

export interface KvSubscription {
  /** Everything under the prefix at the moment the subscription started; events follow from there, in order. */
  readonly entries: readonly KvEntry[];
  unsubscribe(): void;
}

/** Counters of server writes, for the O(1)-writes-per-agent check. */
export interface KvStats {
  /** Writes that create a revision (puts, deletes, successful transactions). */
  writes: number;
  /** Transactions whose compares failed (no revision created). */
  failedTxns: number;
  /** Lease grants and revocations. */
  leaseOps: number;
  /** performance.now() when the last write carrying a leased put (a join) was acknowledged; 0 = none. */
  lastLeasedPutAtMs: number;
}

export interface RendezvousKv {
  /** Where it connects, for error messages (`embedded` for the in-process store). */
  readonly endpoint: string;
  readonly stats: KvStats;
  /** Grants this handler's lease (TTL rounded up to whole seconds) and keeps it alive until revoke or close. */
  grantLease(ttlMs: number): Promise<void>;
  /** Revokes the lease: leased keys vanish at once. */
  revokeLease(): Promise<void>;
  /**
   * A live mirror of the keys under `prefix`, fed by one watch (events of one revision arrive in one batch). Views
   * are shared by the handlers of one connection/state; call release() when done.
   */
  view(prefix: string): Promise<{ readonly view: JobView; release(): void }>;
  /** Applies the transaction atomically; resolves false when a compare failed. */
  txn(txn: KvTxn): Promise<boolean>;
  onConnection(listener: (event: KvConnectionEvent) => void): void;
  /** Stops keepalives and watches without revoking the lease (a crash-like stop). */
  close(): Promise<void>;
}

export function newKvStats(): KvStats {
  return { writes: 0, failedTxns: 0, leaseOps: 0, lastLeasedPutAtMs: 0 };
}

const parsedCache = new WeakMap<KvEntry, unknown>();

/** JSON.parse once per shared entry object: with many handlers on one watch, each value is parsed once. */
export function parseEntry(entry: KvEntry): unknown {
  if (parsedCache.has(entry)) return parsedCache.get(entry);
  let value: unknown;
  try {
    value = JSON.parse(entry.value);
  } catch {
    value = undefined;
  }
  parsedCache.set(entry, value);
  return value;
}
