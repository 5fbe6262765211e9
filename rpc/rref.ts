// Remote references: PyTorch's owner/user protocol with its two guarantees.
//   G1: the owner learns of every user deletion (explicit release() or FinalizationRegistry, RREF_DELETE retried).
//   G2: a parent keeps its RRef alive until the owner has confirmed the child (pendingChildren until RREF_ACCEPT).
// Forks: owner -> user is registered early on the owner (no messages); user -> owner needs nothing because the call
// travels on the same ordered stream as any later RREF_DELETE from that user; user -> user makes the receiver send
// RREF_FORK to the owner, then RREF_ACCEPT to the parent. All control handlers are idempotent.
// Unlike PyTorch, an owner's death is handled: its RRefs become invalid (RREF_INVALID) instead of hanging.

import { RpcError, type CallOptions, type WorkerInfo } from './api.js';
import type { AgentHost } from './agent-extension.js';
import type { DecodeHook, EncodeHook } from './codec.js';
import { MsgType } from './frame.js';

interface Slot {
  settled: boolean;
  value?: unknown;
  error?: Error;
  promise: Promise<unknown>;
  resolve(v: unknown): void;
  reject(e: Error): void;
}

/** Deleted fork ids remembered per worker (see RRefContext.deletedForks). */
const MAX_TOMBSTONES = 65_536;

function newSlot(): Slot {
  const s = { settled: false } as Slot;
  s.promise = new Promise((resolve, reject) => {
    s.resolve = (v) => {
      if (s.settled) return;
      s.settled = true;
      s.value = v;
      resolve(v);
    };
    s.reject = (e) => {
      if (s.settled) return;
      s.settled = true;
      s.error = e;
      reject(e);
    };
  });
  s.promise.catch(() => undefined); // errors are reported through toHere
  return s;
}

/** Bookkeeping for one user RRef; deliberately holds no reference to the RRef object (so it can be collected). */
interface UserToken {
  readonly rrefId: string;
  readonly forkId: string;
  readonly ownerRank: number;
  confirmed: Promise<void>;
  isConfirmed: boolean;
  error?: Error;
  released: boolean;
  lost: boolean;
}

interface OwnerEntry {
  readonly rref: RRef;
  /** forkId -> rank holding that fork (so a lost holder's forks can be dropped). */
  readonly forks: Map<string, number>;
}

interface ForkData {
  id: string;
  owner: number;
  fork?: string;
  parent?: number;
}

type Method<T> = T extends (...a: infer A) => infer R ? (...a: A) => Promise<Awaited<R>> : never;
type RemoteMethod<T> = T extends (...a: infer A) => infer R ? (...a: A) => RRef<Awaited<R>> : never;
export type RRefProxy<T> = { [K in keyof T]: Method<T[K]> };
export type RRefRemoteProxy<T> = { [K in keyof T]: RemoteMethod<T[K]> };

export class RRef<T = unknown> {
  /** @internal */
  constructor(
    private readonly ctx: RRefContext,
    readonly rrefId: string,
    readonly ownerRank: number,
    /** null on the owner. */
    readonly forkId: string | null,
    private readonly slot: Slot | null,
    private readonly token: UserToken | null,
  ) {}

  isOwner(): boolean {
    return this.slot !== null;
  }
  owner(): WorkerInfo {
    return { name: this.ctx.agent.peerName(this.ownerRank), id: this.ownerRank };
  }
  ownerName(): string {
    return this.ctx.agent.peerName(this.ownerRank);
  }
  /** The owner always; a user once the owner has acknowledged its fork. */
  confirmedByOwner(): boolean {
    return this.slot !== null || this.token!.isConfirmed;
  }

  /** Copies the value here (on the owner: the value itself, once computed). Rejects with RREF_INVALID when the owner is gone. */
  async toHere(opts: CallOptions = {}): Promise<T> {
    if (this.slot) return (await this.slot.promise) as T;
    this.assertUsable('toHere');
    if (this.token!.error) throw this.token!.error;
    try {
      return (await this.ctx.agent.request(
        this.ownerRank,
        MsgType.FETCH,
        { id: this.rrefId },
        opts.timeoutMs,
        'toHere',
      )) as T;
    } catch (err) {
      if ((err as RpcError).code === 'PEER_LOST') throw this.invalid('toHere', err);
      throw err;
    }
  }

  /** Owner only: the value, synchronously. Throws if called on a user or before a remote() value is computed. */
  localValue(): T {
    if (!this.slot) {
      throw new RpcError(
        'RREF_INVALID',
        `localValue() called on a user RRef ${this}: only the owner '${this.ownerName()}' holds the value; use toHere()`,
      );
    }
    if (this.slot.error) throw this.slot.error;
    if (!this.slot.settled) {
      throw new RpcError(
        'RREF_INVALID',
        `RRef ${this} has no value yet (its remote call is still running); await toHere()`,
      );
    }
    return this.slot.value as T;
  }

  /** rref.rpcSync().method(...args) runs value.method(...args) on the owner and resolves with the result. */
  rpcSync(opts: CallOptions = {}): RRefProxy<T> {
    return this.proxy((m, args) => this.ctx.agent.rpcAsync(this.ownerRank, '__rref.call', [this, m, args], opts));
  }
  /** Same as rpcSync() (JavaScript cannot block; both return promises). */
  rpcAsync(opts: CallOptions = {}): RRefProxy<T> {
    return this.rpcSync(opts);
  }
  /** rref.remote().method(...args) returns at once an RRef (owned by this RRef's owner) to the method's result. */
  remote(opts: CallOptions = {}): RRefRemoteProxy<T> {
    return this.proxy((m, args) => this.ctx.remote(this.ownerRank, '__rref.call', [this, m, args], opts)) as never;
  }

  private proxy(call: (method: string, args: unknown[]) => unknown): never {
    return new Proxy(
      {},
      {
        get: (_t, prop) => (typeof prop === 'string' ? (...args: unknown[]) => call(prop, args) : undefined),
      },
    ) as never;
  }

  /** Tells the owner this user is gone (after the owner confirmed it). Idempotent; no-op on the owner. */
  release(): Promise<void> {
    return this.token ? this.ctx.releaseToken(this.token) : Promise.resolve();
  }

  /** @internal */
  assertUsable(op: string): void {
    if (this.token?.released) throw new RpcError('RREF_INVALID', `${op} on RRef ${this} after release()`);
    if (this.token?.lost || this.ctx.agent.isPeerLost(this.ownerRank)) throw this.invalid(op);
  }

  private invalid(op: string, cause?: unknown): RpcError {
    return new RpcError(
      'RREF_INVALID',
      `${op}: RRef ${this} is invalid: its owner '${this.ownerName()}' (rank ${this.ownerRank}) left the RPC group`,
      { worker: this.ownerName(), cause },
    );
  }

  toString(): string {
    return this.slot ? `OwnerRRef(${this.rrefId})` : `UserRRef(RRefId=${this.rrefId}, ForkId=${this.forkId})`;
  }
}

/** Per-agent RRef state (PyTorch's RRefContext). */
export class RRefContext {
  private nextLocalId = 1;
  private owners = new Map<string, OwnerEntry>();
  /**
   * Tombstones of deleted forks, so that a FORK or REMOTE handled after its fork's DELETE does not bring the fork
   * back. Each user sends its DELETE after its FORK/REMOTE was answered, on the same ordered stream, so a late one
   * can only be a retry still queued behind it: a bounded window of the most recent deletes is enough, and keeps a
   * long-lived owner from growing one entry per RRef ever released.
   */
  private deletedForks = new Set<string>();
  private users = new Map<string, UserToken>();
  private pendingChildren = new Map<string, { rref: RRef; dest: number }>();
  private readonly registry = new FinalizationRegistry<UserToken>((t) => void this.releaseToken(t));

  constructor(readonly agent: AgentHost) {}

  private newId(): string {
    return `${this.agent.rank}:${this.nextLocalId++}`;
  }

  /** A local owner RRef holding `value` (PyTorch's RRef(value)). */
  createLocal<T>(value: T): RRef<T> {
    const slot = newSlot();
    slot.resolve(value);
    return new RRef<T>(this, this.newId(), this.agent.rank, null, slot, null);
  }

  private newUser<T>(rrefId: string, forkId: string, ownerRank: number): { rref: RRef<T>; token: UserToken } {
    const token: UserToken = {
      rrefId,
      forkId,
      ownerRank,
      confirmed: Promise.resolve(),
      isConfirmed: false,
      released: false,
      lost: false,
    };
    const rref = new RRef<T>(this, rrefId, ownerRank, forkId, null, token);
    this.users.set(forkId, token);
    this.registry.register(rref, token, token);
    return { rref, token };
  }

  private ownerEntry(rrefId: string): OwnerEntry {
    let e = this.owners.get(rrefId);
    if (!e) {
      // Also the "pending owner" case: a FETCH or FORK raced ahead of the REMOTE that creates the value.
      e = { rref: new RRef(this, rrefId, this.agent.rank, null, newSlot(), null), forks: new Map() };
      this.owners.set(rrefId, e);
    }
    return e;
  }

  /** remote(): returns at once; the owner runs `fn` and keeps the result. */
  remote<T>(ownerRank: number, fn: string, args: unknown[], opts: CallOptions): RRef<T> {
    if (ownerRank === this.agent.rank) {
      const { rref, slot } = this.createPendingOwner<T>();
      this.agent.request(ownerRank, MsgType.CALL, { f: fn, a: args }, opts.timeoutMs, `remote '${fn}'`).then(
        (v) => slot.resolve(v),
        (e: Error) => slot.reject(e),
      );
      return rref;
    }
    const rrefId = this.newId();
    const { rref, token } = this.newUser<T>(rrefId, this.newId(), ownerRank);
    token.confirmed = this.agent
      .request(
        ownerRank,
        MsgType.REMOTE,
        { f: fn, a: args, id: rrefId, fork: token.forkId },
        opts.timeoutMs,
        `remote '${fn}'`,
      )
      .then(
        () => {
          token.isConfirmed = true;
        },
        (e: Error) => {
          // Best effort, as in PyTorch: the error is kept on the RRef and raised by its next use.
          token.error = e;
          token.isConfirmed = e instanceof RpcError && e.code === 'REMOTE_ERROR';
        },
      );
    return rref;
  }

  private createPendingOwner<T>(): { rref: RRef<T>; slot: Slot } {
    const slot = newSlot();
    return { rref: new RRef<T>(this, this.newId(), this.agent.rank, null, slot, null), slot };
  }

  encodeHook(dest: number): EncodeHook {
    return (v) => (v instanceof RRef ? { tag: 'rref', data: this.fork(v, dest) } : undefined);
  }

  private fork(rref: RRef, dest: number): ForkData {
    const me = this.agent.rank;
    if (rref.isOwner()) {
      if (dest === me) {
        if (!this.owners.has(rref.rrefId)) this.selfRefs.set(rref.rrefId, rref);
        return { id: rref.rrefId, owner: me };
      }
      const forkId = this.newId();
      let e = this.owners.get(rref.rrefId);
      if (!e) {
        e = { rref, forks: new Map() };
        this.owners.set(rref.rrefId, e);
      }
      e.forks.set(forkId, dest); // early fork registration: the child is confirmed on arrival
      return { id: rref.rrefId, owner: me, fork: forkId, parent: me };
    }
    rref.assertUsable('passing an RRef');
    if (dest === rref.ownerRank) return { id: rref.rrefId, owner: rref.ownerRank };
    const child = this.newId();
    this.pendingChildren.set(child, { rref, dest });
    return { id: rref.rrefId, owner: rref.ownerRank, fork: child, parent: me };
  }

  /** Owner RRefs passed to this worker itself (self calls) that are not otherwise in the owners map. */
  private selfRefs = new Map<string, RRef>();

  decodeHook(src: number, confirmations: Promise<void>[]): DecodeHook {
    return (_tag, raw) => {
      const d = raw as ForkData;
      if (typeof d?.id !== 'string' || typeof d.owner !== 'number') {
        throw new RpcError('PROTOCOL', `malformed RRef fork data ${JSON.stringify(raw)}`);
      }
      if (d.owner === this.agent.rank) {
        const own = this.owners.get(d.id)?.rref ?? this.selfRefs.get(d.id);
        return own ?? this.ownerEntry(d.id).rref;
      }
      if (typeof d.fork !== 'string' || typeof d.parent !== 'number') {
        throw new RpcError('PROTOCOL', `RRef fork data without fork id from rank ${src}`);
      }
      const { rref, token } = this.newUser(d.id, d.fork, d.owner);
      if (d.parent === d.owner) {
        token.isConfirmed = true; // the owner registered this fork before sending it
      } else {
        const parent = d.parent;
        token.confirmed = this.agent.requestWithRetries(d.owner, MsgType.RREF_FORK, { id: d.id, fork: d.fork }).then(
          () => {
            token.isConfirmed = true;
            this.agent
              .requestWithRetries(parent, MsgType.RREF_ACCEPT, { fork: d.fork })
              .catch((e: Error) => this.agent.logger.warn({ err: e.message }, 'rpc: RREF_ACCEPT failed'));
          },
          (e: Error) => {
            token.error = e;
            throw e;
          },
        );
        confirmations.push(token.confirmed);
      }
      return rref;
    };
  }

  // ------------------------------------------------------------------------------------- owner-side handlers

  async handleRemote(
    src: number,
    body: Record<string, unknown>,
    confirmations: Promise<void>[],
    run: (f: unknown, a: unknown) => Promise<unknown>,
  ): Promise<unknown> {
    const id = String(body.id);
    const fork = String(body.fork);
    const e = this.ownerEntry(id);
    if (!this.deletedForks.has(fork)) e.forks.set(fork, src);
    const slot = (e.rref as unknown as { slot: Slot }).slot;
    try {
      if (confirmations.length > 0) await Promise.all(confirmations);
      slot.resolve(await run(body.f, body.a));
    } catch (err) {
      slot.reject(err as Error);
      throw err;
    }
    return true;
  }

  async handleFetch(body: Record<string, unknown>): Promise<unknown> {
    const e = this.owners.get(String(body.id)) ?? this.ownerEntry(String(body.id));
    return await e.rref.toHere();
  }

  handleDelete(body: Record<string, unknown>): boolean {
    const id = String(body.id);
    const fork = String(body.fork);
    this.deletedForks.add(fork);
    if (this.deletedForks.size > MAX_TOMBSTONES) this.deletedForks.delete(this.deletedForks.values().next().value!);
    const e = this.owners.get(id);
    if (e) {
      e.forks.delete(fork);
      if (e.forks.size === 0) this.owners.delete(id);
    }
    return true;
  }

  handleFork(body: Record<string, unknown>, src?: number): boolean {
    const fork = String(body.fork);
    if (!this.deletedForks.has(fork)) this.ownerEntry(String(body.id)).forks.set(fork, src ?? -1);
    return true;
  }

  handleAccept(body: Record<string, unknown>): boolean {
    this.pendingChildren.delete(String(body.fork));
    return true;
  }

  // ------------------------------------------------------------------------------------- lifetime

  async releaseToken(t: UserToken): Promise<void> {
    if (t.released) return;
    t.released = true;
    this.users.delete(t.forkId);
    this.registry.unregister(t);
    await t.confirmed.catch(() => undefined);
    if (t.lost || !this.agent.isActive || this.agent.isPeerLost(t.ownerRank)) return;
    try {
      await this.agent.requestWithRetries(t.ownerRank, MsgType.RREF_DELETE, { id: t.rrefId, fork: t.forkId });
    } catch (err) {
      this.agent.logger.warn({ err: (err as Error).message, rref: t.rrefId }, 'rpc: RREF_DELETE failed');
    }
  }

  /** Shutdown: waits for children to be accepted, then releases every user RRef of this worker. */
  async releaseAll(): Promise<void> {
    while (this.pendingChildren.size > 0) await new Promise((r) => setTimeout(r, 5));
    await Promise.all([...this.users.values()].map((t) => this.releaseToken(t)));
  }

  /** After the shutdown barrier every fork should be gone; what is left leaked (a user that never released). */
  checkLeaks(): void {
    if (this.owners.size > 0) {
      this.agent.logger.warn(
        { rrefs: [...this.owners.keys()].slice(0, 10), count: this.owners.size },
        'rpc: detected RRef leaks during shutdown',
      );
    }
  }

  /** Test/diagnostic view. */
  stats(): { owners: number; users: number; pendingChildren: number } {
    return { owners: this.owners.size, users: this.users.size, pendingChildren: this.pendingChildren.size };
  }
  hasOwner(rrefId: string): boolean {
    return this.owners.has(rrefId);
  }
  ownerForks(rrefId: string): string[] {
    return [...(this.owners.get(rrefId)?.forks.keys() ?? [])];
  }

  onPeerLost(rank: number): void {
    for (const t of this.users.values()) if (t.ownerRank === rank) t.lost = true;
    for (const [fork, c] of this.pendingChildren) {
      if (c.dest === rank || c.rref.ownerRank === rank) this.pendingChildren.delete(fork);
    }
    for (const [id, e] of this.owners) {
      for (const [fork, holder] of e.forks) if (holder === rank) e.forks.delete(fork);
      if (e.forks.size === 0 && (e.rref as unknown as { slot: Slot }).slot.settled) this.owners.delete(id);
    }
  }

  clear(): void {
    for (const t of this.users.values()) t.lost = true;
    this.users.clear();
    this.owners.clear();
    this.pendingChildren.clear();
    this.selfRefs.clear();
  }
}
