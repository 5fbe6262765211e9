// The same-host shared-memory data plane of the TCP process group (native side: collective/native/src/shm.cc).
//
// Choice: for the world group, the store vote and the pure decision between this plane, the socket plane across hosts
// and the JS path are net-plane.ts's (`decidePlane`, `openDataPlane`). Sub-groups use `openShmPlane` here, the same
// agreement restricted to this plane (`decideShm`, pure): TENSILE_COLLECTIVE_TRANSPORT=js|native forces either;
// unset, the plane is used when the addon loads and every member runs on this host; one member with the addon
// missing moves every member to the JS path. A forced `native` that cannot be honoured is an error
// (BACKEND_UNAVAILABLE naming why), never a silent fallback.
//
// Setup (`mapShmSegment`): rank 0 creates the segment (an anonymous memfd), publishes where to open it, every rank
// maps it and says whether that worked; rank 0 closes its descriptor once all have answered. If any rank failed to
// map, all destroy their handles and use the JS path (or fail, when forced). Nothing is ever created in /dev/shm.
//
// The world group's collectives (allreduce, allreduceInto, broadcast, reduce, allgather, reduceScatter, barrier) then
// run on the plane; send/recv stay on the TCP connections, which also carry failure detection: a peer's socket
// closing fails the plane (shmFail → PEER_LOST naming it), and a plane failure (timeout, lost peer) fails the
// transport, so every op of every group rejects, exactly as on the JS path.
//
// Sub-groups (`newGroup`): the TCP sub-group is made first (it numbers the child the same way on every rank, and
// carries the sub-group's send/recv); then its members open a plane of their own with the same agreement and setup,
// under a store prefix named after the parent's prefix and child index. So every sub-group of two or more ranks
// runs its collectives in shared memory too, with its own segment and worker thread; a sub-group that could not map
// falls back to its TCP group on every member alike. A sub-group's plane is destroyed with the sub-group, or at the
// latest when the shared transport fails or closes (the world group destroyed or aborted, a lost peer, a timeout).
import type { Logger } from '../common/logger.js';
import { CollectiveError, type CollectiveOptions, type ProcessGroup, type Store } from './api.js';
import { loadAddon, type AddonLoad, type NativeAddon, type NativeShmGroup } from './native/addon.js';
import { hostIdentity } from './host-identity.js';
import { NativeOpsGroup, type NativeCall } from './native-group-ops.js';
import type { TcpTransport } from './tcp-transport.js';

export type TransportChoice = 'js' | 'native';

export interface ShmTuning {
  /** Bytes of each rank's input slot (and of the output slot): the unit in which large buffers are moved. */
  readonly slotBytes: number;
  /** allreduce payloads up to this many bytes are reduced whole by every rank (one wait instead of two). */
  readonly smallBytes: number;
  /**
   * Busy-wait polls before sleeping on a futex; 0 sleeps at once. Single-step ops (barrier, allreduce/reduce up to
   * smallBytes) start on the calling thread and finish there when every peer has already arrived (or arrives within
   * `spin` polls); otherwise the group's worker thread finishes them.
   */
  readonly spin: number;
}

/**
 * Defaults. No spinning: on the shared 2-core development machine a 2000-poll spin made the 4 KB two-rank allreduce
 * 4.5× slower (0.18 against 0.04 ms: the spinner takes the core its peer needs); with idle cores it may pay, so
 * TENSILE_SHM_SPIN turns it on (the worker's waits, and a bounded poll on the calling thread for single-step ops).
 */
export function defaultShmTuning(): ShmTuning {
  return { slotBytes: 2 << 20, smallBytes: 64 << 10, spin: 0 };
}

/** What one rank answers in the agreement round. */
export interface ShmVote {
  readonly hostId: string;
  /** Empty when this rank can and wants to use the plane; otherwise why not. */
  readonly veto: string;
  readonly forced: boolean;
}

export type ShmDecision = { readonly use: true } | { readonly use: false; readonly reason: string };

/** The decision every rank takes from the same votes (pure). */
export function decideShm(votes: readonly ShmVote[]): ShmDecision {
  const vetoes = votes.map((v, r) => (v.veto ? `rank ${r}: ${v.veto}` : '')).filter((s) => s !== '');
  if (vetoes.length > 0) return { use: false, reason: vetoes.join('; ') };
  const hosts = new Set(votes.map((v) => v.hostId));
  if (hosts.size > 1) return { use: false, reason: `the ranks run on ${hosts.size} hosts` };
  return { use: true };
}

/** TENSILE_COLLECTIVE_TRANSPORT, parsed; throws INVALID_ARGUMENT naming a bad value. */
export function transportFromEnv(env: NodeJS.ProcessEnv): TransportChoice | undefined {
  const raw = env.TENSILE_COLLECTIVE_TRANSPORT;
  if (raw === undefined || raw === '') return undefined;
  if (raw === 'js' || raw === 'native') return raw;
  throw new CollectiveError(
    'INVALID_ARGUMENT',
    `TENSILE_COLLECTIVE_TRANSPORT=${JSON.stringify(raw)}: expected 'js' or 'native'`,
  );
}

/** Where the ranks that share a native plane meet to set it up: this rank among them, and the store they agree through. */
export interface PlaneSetup {
  /** This rank within the ranks sharing the plane (a group's, or one host's ranks on the hierarchical path). */
  readonly rank: number;
  readonly worldSize: number;
  readonly store: Store;
  readonly timeoutMs: number;
  readonly logger: Logger;
  /** Store key namespace of this plane (one per world generation, group and, for a host's segment, host). */
  readonly prefix: string;
}

export interface ShmPlaneOptions extends PlaneSetup {
  /** undefined = automatic. */
  readonly transport?: TransportChoice;
  readonly tuning?: Partial<ShmTuning>;
}

export interface ShmPlane {
  readonly addon: NativeAddon;
  readonly group: NativeShmGroup;
}

const text = (b: Uint8Array): string => new TextDecoder().decode(b);

/**
 * Every rank's answer in a setup round: sets this rank's (`mine`) under `<prefix>/<key>/<rank>` and reads the others'
 * (each read bounded by `timeoutMs`); resolves with them in rank order, this rank's included. Rejects with
 * TIMEOUT/STORE when the store fails.
 */
export async function exchangeAnswers(
  o: Pick<PlaneSetup, 'rank' | 'worldSize' | 'store' | 'timeoutMs' | 'prefix'>,
  key: string,
  mine: string,
): Promise<string[]> {
  await o.store.set(`${o.prefix}/${key}/${o.rank}`, mine);
  return Promise.all(
    Array.from({ length: o.worldSize }, async (_, r) =>
      r === o.rank ? mine : text(await o.store.get(`${o.prefix}/${key}/${r}`, o.timeoutMs)),
    ),
  );
}

/**
 * Why this rank cannot or will not use a native plane, or '' when it can (a vote's `veto`). `loaded` is null only when
 * `transport` is 'js'; `needs` names what the plane needs of Linux, for the message on other platforms.
 */
export function nativeVeto(transport: TransportChoice | undefined, loaded: AddonLoad | null, needs: string): string {
  if (transport === 'js' || !loaded) return 'TENSILE_COLLECTIVE_TRANSPORT=js';
  if (!loaded.ok) return loaded.reason;
  if (typeof loaded.addon.shmOpen !== 'function')
    return 'the native addon predates the shared-memory plane (rebuild it)';
  if (process.platform !== 'linux') return `platform ${process.platform} (needs Linux ${needs})`;
  return '';
}

/**
 * Agrees on the data plane with the other ranks and, when it is the shared-memory plane, opens it. Returns null for
 * the JS path. Rejects with BACKEND_UNAVAILABLE when `native` is forced and impossible, TIMEOUT/STORE when the store
 * fails. Every rank must call it at the same point of group creation.
 */
export async function openShmPlane(o: ShmPlaneOptions): Promise<ShmPlane | null> {
  if (o.worldSize < 2) return null;
  const tuning = { ...defaultShmTuning(), ...o.tuning };
  const loaded = o.transport === 'js' ? null : loadAddon();
  const veto = nativeVeto(o.transport, loaded, 'memfd and futex');
  const mine: ShmVote = { hostId: hostIdentity(), veto, forced: o.transport === 'native' };
  const votes = (await exchangeAnswers(o, 'vote', JSON.stringify(mine))).map((a) => JSON.parse(a) as ShmVote);
  const decision = decideShm(votes);
  const forced = votes.some((v) => v.forced);
  if (!decision.use) {
    if (forced)
      throw new CollectiveError(
        'BACKEND_UNAVAILABLE',
        `TENSILE_COLLECTIVE_TRANSPORT=native: the shared-memory plane cannot be used: ${decision.reason}`,
        { rank: o.rank },
      );
    if (o.rank === 0)
      o.logger.info({ transport: 'js', reason: decision.reason }, 'collective: data plane is the JS TCP transport');
    return null;
  }
  const addon = (loaded as { ok: true; addon: NativeAddon }).addon;
  const plane = await mapShmSegment({ ...o, addon, mustMap: forced, tuning });
  if (plane && o.rank === 0)
    o.logger.info(
      { transport: 'native', worldSize: o.worldSize, ...tuning },
      'collective: data plane is native shared memory (all ranks on one host)',
    );
  return plane;
}

export interface ShmSegmentOptions extends PlaneSetup {
  readonly addon: NativeAddon;
  /** When a rank fails to map the segment: throw BACKEND_UNAVAILABLE (true) or return null for the JS path. */
  readonly mustMap: boolean;
  readonly tuning: ShmTuning;
}

/**
 * Creates (rank 0) or maps the segment on every rank and agrees through the store that all mapped it. Returns null
 * when one could not and `mustMap` is false (every rank then takes the JS path); rejects with BACKEND_UNAVAILABLE
 * when `mustMap`, TIMEOUT/STORE when the store fails. Every rank of the segment must call it at the same point.
 */
export async function mapShmSegment(o: ShmSegmentOptions): Promise<ShmPlane | null> {
  const { addon, tuning } = o;
  let handle: NativeShmGroup | null = null;
  let failure = '';
  try {
    if (o.rank === 0) {
      const made = addon.shmOpen(o.worldSize, 0, tuning.slotBytes, tuning.smallBytes, tuning.spin);
      handle = made.group;
      await o.store.set(`${o.prefix}/segment`, JSON.stringify({ pid: made.pid, fd: made.fd, token: made.token }));
    } else {
      const source = JSON.parse(text(await o.store.get(`${o.prefix}/segment`, o.timeoutMs))) as {
        pid: number;
        fd: number;
        token: string;
      };
      handle = addon.shmOpen(o.worldSize, o.rank, tuning.slotBytes, tuning.smallBytes, tuning.spin, source).group;
    }
  } catch (err) {
    if (err instanceof CollectiveError) throw err;
    failure = (err as Error).message;
  }
  const answers = await exchangeAnswers(o, 'mapped', failure);
  if (handle && o.rank === 0) addon.shmSeal(handle);
  const failed = answers.map((a, r) => (a ? `rank ${r}: ${a}` : '')).filter((s) => s !== '');
  if (failed.length > 0) {
    if (handle) await addon.shmDestroy(handle);
    const reason = `mapping the segment failed: ${failed.join('; ')}`;
    if (o.mustMap)
      throw new CollectiveError(
        'BACKEND_UNAVAILABLE',
        `the shared-memory plane is required (TENSILE_COLLECTIVE_TRANSPORT=native, or a hierarchical allreduce) but ${reason}`,
      );
    if (o.rank === 0) o.logger.info({ transport: 'js', reason }, 'collective: data plane is the JS TCP transport');
    return null;
  }
  return { addon, group: handle! };
}

/**
 * What a group on the plane needs to open its sub-groups' planes (the world's store is open while the world lives).
 * `prefix` is this group's store namespace; a sub-group's is `<prefix>/sub/<child index>`.
 */
export type ShmSubGroupContext = Omit<ShmPlaneOptions, 'rank' | 'worldSize'>;

/**
 * A group with its collectives on the shared-memory plane; send/recv are the TCP group's. Ops are queued in call
 * order on the plane's worker thread (the ordering rule of every backend: the same collectives in the same order on
 * every rank). With a `subGroups` context, newGroup puts sub-groups on planes of their own (see the header).
 */
export class ShmProcessGroup extends NativeOpsGroup implements ProcessGroup {
  readonly dataPlane = 'shm' as const;

  /**
   * `subGroups`: open planes for sub-groups (without it, newGroup returns the TCP sub-group). `worldRanks`: given for
   * a sub-group (its members' world ranks, in group order); its plane is then also released when the shared transport
   * fails or closes, since no destroy of the world group reaches it.
   */
  constructor(
    tcp: ProcessGroup,
    transport: Pick<TcpTransport, 'failed' | 'onFailure' | 'fail'>,
    private readonly plane: ShmPlane,
    private readonly subGroups?: ShmSubGroupContext,
    worldRanks?: readonly number[],
  ) {
    super(tcp, transport, worldRanks);
  }

  /** The plane publishes the culprit to its members in its own numbering (-1: not a member; it then names this rank). */
  protected failNative(code: string, message: string, peer: number): void {
    this.plane.addon.shmFail(this.plane.group, code, message, this.worldRanks.indexOf(peer));
  }

  protected async destroyNative(): Promise<void> {
    await this.plane.addon.shmDestroy(this.plane.group);
  }

  protected runOp<T>(op: string, opts: CollectiveOptions | undefined, call: NativeCall, value: T): Promise<T> {
    const { addon, group } = this.plane;
    const { kind, dtype, rop, root, count, send, recv } = call;
    return this.track(
      op,
      opts,
      (timeoutMs) => addon.shmSubmit(group, kind, dtype, rop, root, count, send, recv, timeoutMs),
      value,
      async (r) => {
        // A member that saw a non-member die publishes itself as the culprit (the plane can only name members): let
        // this rank's own connections, which saw the same death, report it first. One turn of the loop suffices, as
        // the kernel closed the dead process's sockets before the plane could see it gone.
        if (this.isSubGroup && r.code === 'PEER_LOST' && !this.state)
          await new Promise<void>((resolve) => setImmediate(resolve));
        // The plane names ranks by their place in the group; a sub-group's errors name world ranks instead.
        const message = this.isSubGroup
          ? `${r.message.replace(/\brank (\d+)/g, (m, q: string) => `rank ${this.worldRanks[Number(q)] ?? q}`)} ` +
            `(in the sub-group of world ranks ${this.worldRanks.join(', ')}; ranks named are world ranks)`
          : r.message;
        return { message, peerRank: r.peer >= 0 ? this.worldRanks[r.peer] : undefined };
      },
    );
  }

  /**
   * Every rank of this group calls it with the same list (validated by the TCP group, which throws INVALID_ARGUMENT
   * on every rank alike). Members then open the sub-group's plane through the store (rejects with TIMEOUT/STORE, or
   * BACKEND_UNAVAILABLE when TENSILE_COLLECTIVE_TRANSPORT=native cannot be honoured) and meet at its barrier.
   */
  async newGroup(ranks: readonly number[]): Promise<ProcessGroup | null> {
    const { sub, index } = await this.newTcpGroup(ranks);
    if (!this.subGroups || !sub) return sub;
    const ctx = { ...this.subGroups, prefix: `${this.subGroups.prefix}/sub/${index}` };
    const plane = await openShmPlane({ ...ctx, rank: sub.rank, worldSize: sub.worldSize });
    if (!plane) return sub;
    const members = ranks.map((i) => this.worldRanks[i]!);
    const group = new ShmProcessGroup(sub, this.transport, plane, ctx, members);
    // Every member has mapped the segment (and its first member closed the descriptor) before anyone uses it.
    await group.barrier();
    return group;
  }
}
