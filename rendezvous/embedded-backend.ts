// The `embedded` backend: the etcd backend's semantics in one process, no server. Several handlers may share one
// EmbeddedRendezvousState (several "nodes" in one test process); `--standalone` uses a private one.
import type { Logger, NodeDescriptor, RendezvousConfig, RendezvousHandler } from './api.js';
import {
  type KvConnectionEvent,
  type KvEntry,
  type KvEvent,
  type KvStats,
  type KvSubscription,
  type KvTxn,
  type RendezvousKv,
  newKvStats,
} from './kv.js';
import { KvRendezvousHandler } from './kv-handler.js';

interface StoredValue {
  value: string;
  modRevision: number;
  leaseId: number | null;
}

interface StoredLease {
  ttlMs: number;
  timer: NodeJS.Timeout | null;
  keys: Set<string>;
}

interface Subscriber {
  prefix: string;
  onEvents: (events: readonly KvEvent[]) => void;
}

/** An in-memory store with etcd's revision, lease and watch semantics. Share one between handlers of one job. */
export class EmbeddedRendezvousState {
  private revision = 0;
  private nextLeaseId = 1;
  private readonly data = new Map<string, StoredValue>();
  private readonly leases = new Map<number, StoredLease>();
  private readonly subscribers = new Set<Subscriber>();

  /** Current revision (number of committed writes). */
  get currentRevision(): number {
    return this.revision;
  }

  /** A snapshot of all keys, for status and tests. */
  entries(prefix = ''): KvEntry[] {
    const out: KvEntry[] = [];
    for (const [key, v] of this.data) {
      if (!key.startsWith(prefix)) continue;
      out.push({ key, value: v.value, modRevision: v.modRevision, ...leaseField(v.leaseId) });
    }
    return out.sort((a, b) => a.modRevision - b.modRevision);
  }

  grant(ttlMs: number): number {
    const id = this.nextLeaseId++;
    this.leases.set(id, { ttlMs, timer: null, keys: new Set() });
    this.keepAlive(id);
    return id;
  }

  /** Renews the lease; false when it no longer exists. */
  keepAlive(id: number): boolean {
    const lease = this.leases.get(id);
    if (lease === undefined) return false;
    if (lease.timer !== null) clearTimeout(lease.timer);
    lease.timer = setTimeout(() => this.revoke(id), lease.ttlMs);
    lease.timer.unref();
    return true;
  }

  revoke(id: number): void {
    const lease = this.leases.get(id);
    if (lease === undefined) return;
    if (lease.timer !== null) clearTimeout(lease.timer);
    this.leases.delete(id);
    if (lease.keys.size > 0) this.commit({ compares: [], puts: [], deletes: [...lease.keys] }, null);
  }

  hasLease(id: number): boolean {
    return this.leases.has(id);
  }

  subscribe(prefix: string, onEvents: (events: readonly KvEvent[]) => void): KvSubscription {
    const sub: Subscriber = { prefix, onEvents };
    this.subscribers.add(sub);
    return { entries: this.entries(prefix), unsubscribe: () => this.subscribers.delete(sub) };
  }

  /** Applies a transaction atomically at one new revision; false when a compare fails. */
  commit(txn: KvTxn, leaseId: number | null): boolean {
    for (const c of txn.compares) {
      if ((this.data.get(c.key)?.modRevision ?? 0) !== c.modRevision) return false;
    }
    if (txn.puts.some((p) => p.leased) && (leaseId === null || !this.leases.has(leaseId))) {
      throw new Error(`embedded rendezvous: lease ${leaseId} not found`);
    }
    const revision = this.revision + 1;
    const events: KvEvent[] = [];
    for (const key of txn.deletes) {
      const old = this.data.get(key);
      if (old === undefined) continue;
      this.detach(key, old);
      this.data.delete(key);
      events.push({ type: 'delete', key, value: '', modRevision: revision });
    }
    for (const p of txn.puts) {
      const old = this.data.get(p.key);
      if (old !== undefined) this.detach(p.key, old);
      const lid = p.leased ? leaseId : null;
      this.data.set(p.key, { value: p.value, modRevision: revision, leaseId: lid });
      if (lid !== null) this.leases.get(lid)?.keys.add(p.key);
      events.push({ type: 'put', key: p.key, value: p.value, modRevision: revision, ...leaseField(lid) });
    }
    if (events.length === 0) return true;
    this.revision = revision;
    for (const sub of this.subscribers) {
      const mine = events.filter((e) => e.key.startsWith(sub.prefix));
      // Delivered asynchronously and in commit order (setImmediate is FIFO), as a watch would.
      if (mine.length > 0) setImmediate(() => this.subscribers.has(sub) && sub.onEvents(mine));
    }
    return true;
  }

  private detach(key: string, old: StoredValue): void {
    if (old.leaseId !== null) this.leases.get(old.leaseId)?.keys.delete(key);
  }
}

function leaseField(leaseId: number | null): { lease?: string } {
  return leaseId === null ? {} : { lease: String(leaseId) };
}

/** RendezvousKv over an EmbeddedRendezvousState. */
export class EmbeddedKv implements RendezvousKv {
  readonly endpoint = 'embedded';
  readonly stats: KvStats = newKvStats();
  private leaseId: number | null = null;
  private keepAliveTimer: NodeJS.Timeout | null = null;
  private readonly connectionListeners: ((e: KvConnectionEvent) => void)[] = [];

  constructor(private readonly state: EmbeddedRendezvousState) {}

  get source(): object {
    return this.state;
  }

  async grantLease(ttlMs: number): Promise<void> {
    const ttl = Math.max(1000, Math.ceil(ttlMs / 1000) * 1000);
    this.leaseId = this.state.grant(ttl);
    this.stats.leaseOps++;
    if (this.keepAliveTimer !== null) clearInterval(this.keepAliveTimer);
    this.keepAliveTimer = setInterval(() => this.renew(ttl), ttl / 4);
    this.keepAliveTimer.unref();
  }

  private renew(ttlMs: number): void {
    if (this.leaseId === null || this.state.keepAlive(this.leaseId)) return;
    // Lost (cannot happen without a server, but keeps the contract): take a new lease.
    this.leaseId = this.state.grant(ttlMs);
    this.stats.leaseOps++;
    for (const l of this.connectionListeners) l({ type: 'lease-renewed' });
  }

  async revokeLease(): Promise<void> {
    this.stopKeepAlive();
    if (this.leaseId !== null) {
      this.state.revoke(this.leaseId);
      this.stats.leaseOps++;
      this.leaseId = null;
    }
  }

  /** The in-process store keeps the lease with this process's own timers: it is never cut off from it. */
  leaseConfirmedAtMs(): number {
    return performance.now();
  }

  async revokeLeaseOf(leaseId: string): Promise<void> {
    const id = Number(leaseId);
    if (!this.state.hasLease(id)) return;
    this.state.revoke(id);
    this.stats.leaseOps++;
  }

  async subscribe(prefix: string, onEvents: (events: readonly KvEvent[]) => void): Promise<KvSubscription> {
    return this.state.subscribe(prefix, onEvents);
  }

  async txn(txn: KvTxn): Promise<boolean> {
    const ok = this.state.commit(txn, this.leaseId);
    if (ok) {
      this.stats.writes++;
      if (txn.puts.some((p) => p.leased)) this.stats.lastLeasedPutAtMs = performance.now();
    } else this.stats.failedTxns++;
    return ok;
  }

  onConnection(listener: (event: KvConnectionEvent) => void): void {
    this.connectionListeners.push(listener);
  }

  async close(): Promise<void> {
    this.stopKeepAlive();
  }

  private stopKeepAlive(): void {
    if (this.keepAliveTimer !== null) clearInterval(this.keepAliveTimer);
    this.keepAliveTimer = null;
  }
}

export interface EmbeddedHandlerArgs {
  readonly config: RendezvousConfig;
  readonly self: NodeDescriptor;
  readonly logger?: Logger;
  /** Share one state between handlers to form several nodes in one process; a private one when omitted. */
  readonly embeddedState?: EmbeddedRendezvousState;
}

/** Creates an embedded handler; resolves once it is registered with the (shared or private) state. */
export async function createEmbeddedRendezvousHandler(args: EmbeddedHandlerArgs): Promise<RendezvousHandler> {
  const state = args.embeddedState ?? new EmbeddedRendezvousState();
  const handler = new KvRendezvousHandler('embedded', args.config, args.self, new EmbeddedKv(state), args.logger);
  await handler.start();
  return handler;
}
