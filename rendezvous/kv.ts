// The narrow key-value face the rendezvous handler drives: etcd v3 primitives (revisions, one lease per handler,
// transactions comparing mod revisions, prefix watches). `etcd-backend.ts` maps it onto etcd; `embedded-backend.ts`
// keeps the same semantics in process memory. The handler's logic (`kv-handler.ts`) is shared by both; it owns the
// parsed picture of a job (`job-view.ts`): this face only moves keys, revisions and events.

export interface KvEntry {
  readonly key: string;
  readonly value: string;
  /** Revision of the last write to this key (etcd's mod_revision). */
  readonly modRevision: number;
  /** The lease the key is attached to (etcd's lease id, decimal), absent when none. */
  readonly lease?: string;
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
   * performance.now() at which the newest request that the store confirmed this lease alive for (the grant or a
   * keep-alive) was *sent*. The store counts the TTL from when it received that request, so it cannot expire the
   * lease before this + TTL: past that, this node must presume its lease gone (the handler fences itself).
   */
  leaseConfirmedAtMs(): number;
  /**
   * Revokes another holder's lease (a dead agent's, by the id in its keys' `lease`): its keys vanish at once and
   * every watcher sees the deletions. Resolves when revoked or when the lease was already gone; rejects on store
   * errors.
   */
  revokeLeaseOf(leaseId: string): Promise<void>;
  /**
   * The store behind this face (the etcd connection, the embedded state). Handlers whose faces report the same
   * source may share one subscription per prefix and one parsed view of it (job-view.ts `sharedJobViews`).
   */
  readonly source: object;
  /**
   * Everything under `prefix` now, then every change in revision order, the events of one revision in one call
   * (one watch). The subscription belongs to the source, not to this face: it lives until unsubscribe() or
   * until the source itself closes, not only as long as this face. Rejects when the store cannot be read.
   */
  subscribe(prefix: string, onEvents: (events: readonly KvEvent[]) => void): Promise<KvSubscription>;
  /** Applies the transaction atomically; resolves false when a compare failed. */
  txn(txn: KvTxn): Promise<boolean>;
  onConnection(listener: (event: KvConnectionEvent) => void): void;
  /** Stops keepalives without revoking the lease (a crash-like stop). */
  close(): Promise<void>;
}

export function newKvStats(): KvStats {
  return { writes: 0, failedTxns: 0, leaseOps: 0, lastLeasedPutAtMs: 0 };
}
