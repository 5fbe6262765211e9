// The data plane of the TCP process group across hosts: native peer sockets driven by a native thread per group
// (collective/native/src/net.cc), and the choice between it, the same-host shared-memory plane (shm-plane.ts) and
// the JS TCP path.
//
// Choice (`decidePlane`, pure): every rank publishes a vote (host identity, whether it can and wants the native
// planes); all take the same decision from the same votes. A veto (addon missing, TENSILE_COLLECTIVE_TRANSPORT=js)
// moves every rank to the JS path, logged once by rank 0; one host → shared memory; several hosts → the socket plane,
// hierarchical when some host runs several ranks (unless turned off). `native` forced but impossible is
// BACKEND_UNAVAILABLE naming why, never a silent fallback.
//
// Socket plane (`NetProcessGroup`): one native group over all ranks (`flat`) runs the world group's collectives
// (allreduce, allreduceInto, broadcast, reduce, allgather, reduceScatter, barrier). On the hierarchical path,
// allreduce and allreduceInto instead run in three stages, one after the other: a shared-memory reduce to the host's
// first rank (a shm group of the host's ranks), a socket allreduce among the hosts' first ranks (a second native
// group, `leaders`), and a shared-memory broadcast from the host's first rank; broadcast in up to three (a shm
// broadcast on the root's host when the root is not its first rank, a socket broadcast among the first ranks, a shm
// broadcast from each other host's first rank). Both above `smallBytes` only, in chunks; hierarchical ops are chained
// in call order so that every rank of a host submits the stages in the same order. send/recv stay on the TCP connections,
// which also carry failure detection: a peer's socket closing fails the native groups (PEER_LOST naming it), and a
// native failure (timeout, lost peer, corrupt stream) fails the transport, so every op of every group rejects, as on
// the JS path. Sub-groups (`newGroup`) of two or more ranks get a plane of their own after their TCP sub-group is
// made: shared memory when the members share a host, else a flat socket group of the members, under a store prefix
// named after the child index; their errors name world ranks, and their native groups are released with them or at
// the latest when the shared transport fails or closes.
import {
  CollectiveError,
  type CollectiveErrorCode,
  type CollectiveOptions,
  type ProcessGroup,
  type Store,
} from './api.js';
import {
  loadAddon,
  ShmKind,
  ShmOp,
  type NativeAddon,
  type NativeNetAddress,
  type NativeNetGroup,
  type NativeShmGroup,
  type NativeShmResult,
} from './native/addon.js';
import { hostIdentity } from './host-identity.js';
import type { TcpBuffer } from './reduce-ops.js';
import {
  defaultShmTuning,
  exchangeAnswers,
  mapShmSegment,
  nativeVeto,
  ShmProcessGroup,
  type PlaneSetup,
  type ShmTuning,
  type TransportChoice,
} from './shm-plane.js';
import { describeCall, NativeOpsGroup, type NativeCall } from './native-group-ops.js';
import type { TcpTransport } from './tcp-transport.js';

export interface NetTuning {
  /**
   * allreduce payloads up to this many bytes use recursive doubling (on the flat group, also where the layout is
   * hierarchical); larger ones the ring, or the hierarchical path.
   */
  readonly smallBytes: number;
  /** Ring chunks are reduced in pieces of this many bytes as they arrive; broadcast forwards segments of it. */
  readonly segmentBytes: number;
  /** Hierarchical allreduce (shm within a host, sockets between hosts) when some host runs several ranks. */
  readonly hierarchical: boolean;
  /**
   * The hierarchical allreduce moves buffers in chunks of this many bytes, pipelined: the socket allreduce of chunk
   * i runs while the host reduces chunk i+1 and broadcasts chunk i−1 (`hierarchicalSchedule`).
   */
  readonly chunkBytes: number;
}

/**
 * Defaults. smallBytes 64 KiB: recursive doubling sends the whole buffer log2(n) times, the ring 2(n−1)/n times but in
 * 2(n−1) round trips; segmentBytes 256 KiB keeps a received piece in cache while it is reduced; chunkBytes 1 MiB: in
 * two A/B runs each (bench/allreduce, 2 × 2 simulated hosts, 17:17 UTC) the hierarchical path ran at 1.19–3.43× the
 * flat ring from 1 to 64 MB with 1 MiB chunks, against 0.88–1.42× with 4 MiB chunks (noisy, but never worse).
 */
export function defaultNetTuning(): NetTuning {
  return { smallBytes: 64 << 10, segmentBytes: 256 << 10, hierarchical: true, chunkBytes: 1 << 20 };
}

/** One host-local stage of the hierarchical allreduce: reduce chunk i to the leader, or broadcast it from there. */
export type HostStage = { readonly stage: 'reduce' | 'broadcast'; readonly chunk: number };

/**
 * The order in which every rank of a host submits the shared-memory stages of an allreduce in `chunks` chunks (pure):
 * reduce 0, reduce 1, then broadcast i−1 and reduce i+1 for each i, then the last broadcast. The shared-memory
 * queue runs them in this order on every rank of the host; the leader submits broadcast i only once chunk i's socket
 * allreduce (started when reduce i completed) is done, so that allreduce overlaps reduce i+1 and broadcast i−1.
 */
export function hierarchicalSchedule(chunks: number): HostStage[] {
  const out: HostStage[] = [{ stage: 'reduce', chunk: 0 }];
  if (chunks > 1) out.push({ stage: 'reduce', chunk: 1 });
  for (let i = 1; i < chunks; i++) {
    out.push({ stage: 'broadcast', chunk: i - 1 });
    if (i + 1 < chunks) out.push({ stage: 'reduce', chunk: i + 1 });
  }
  out.push({ stage: 'broadcast', chunk: chunks - 1 });
  return out;
}

/** What one rank answers in the agreement round. */
export interface PlaneVote {
  readonly hostId: string;
  /** Empty when this rank can and wants to use a native plane; otherwise why not. */
  readonly veto: string;
  /** Empty when this rank's addon has the socket plane; otherwise why not. */
  readonly netVeto: string;
  readonly forced: boolean;
}

export type PlaneDecision =
  | { readonly plane: 'shm' }
  | { readonly plane: 'net'; readonly hosts: readonly (readonly number[])[]; readonly hierarchical: boolean }
  | { readonly plane: 'js'; readonly reason: string }
  | { readonly plane: 'unavailable'; readonly reason: string };

/**
 * The decision every rank takes from the same votes (pure). `hosts` lists the ranks of each host, hosts ordered by
 * their lowest rank, ranks ascending.
 */
export function decidePlane(votes: readonly PlaneVote[], o: { readonly hierarchical: boolean }): PlaneDecision {
  const forced = votes.some((v) => v.forced);
  const vetoes = votes.map((v, r) => (v.veto ? `rank ${r}: ${v.veto}` : '')).filter((s) => s !== '');
  const refuse = (reason: string): PlaneDecision =>
    forced
      ? { plane: 'unavailable', reason: `TENSILE_COLLECTIVE_TRANSPORT=native: no native data plane: ${reason}` }
      : { plane: 'js', reason };
  if (vetoes.length > 0) return refuse(vetoes.join('; '));
  const byHost = new Map<string, number[]>();
  votes.forEach((v, r) => {
    const list = byHost.get(v.hostId);
    if (list) list.push(r);
    else byHost.set(v.hostId, [r]);
  });
  if (byHost.size === 1) return { plane: 'shm' };
  const netVetoes = votes.map((v, r) => (v.netVeto ? `rank ${r}: ${v.netVeto}` : '')).filter((s) => s !== '');
  if (netVetoes.length > 0) return refuse(`the ranks run on ${byHost.size} hosts and ${netVetoes.join('; ')}`);
  const hosts = [...byHost.values()];
  return { plane: 'net', hosts, hierarchical: o.hierarchical && hosts.some((h) => h.length > 1) };
}

export interface DataPlaneOptions extends PlaneSetup {
  readonly store: Store & { readonly localAddress?: string };
  /** undefined = automatic. */
  readonly transport?: TransportChoice;
  readonly shmTuning?: Partial<ShmTuning>;
  readonly netTuning?: Partial<NetTuning>;
}

function myVote(o: DataPlaneOptions): { vote: PlaneVote; addon: NativeAddon | null } {
  const loaded = o.transport === 'js' ? null : loadAddon();
  const addon = loaded?.ok ? loaded.addon : null;
  const veto = nativeVeto(o.transport, loaded, 'memfd, futex and epoll-style polling');
  const netVeto =
    addon && typeof addon.netOpen !== 'function' ? 'the native addon predates the socket plane (rebuild it)' : '';
  return { vote: { hostId: hostIdentity(), veto, netVeto, forced: o.transport === 'native' }, addon };
}

/**
 * Opens one native socket group over `members` (global ranks; this rank is members[index]): listens, publishes its
 * address under `prefix`, reads the others' and builds the mesh. Rejects with TIMEOUT/PEER_LOST (the mesh could not
 * be built, naming who) or TIMEOUT/STORE (the store failed).
 */
async function openNetGroup(
  addon: NativeAddon,
  o: DataPlaneOptions,
  prefix: string,
  members: readonly number[],
  index: number,
  tuning: NetTuning,
): Promise<NativeNetGroup> {
  const host = o.store.localAddress ?? '127.0.0.1';
  const made = addon.netOpen(members.length, index, host, tuning.smallBytes, tuning.segmentBytes);
  try {
    const mine: NativeNetAddress = { host, port: made.port, token: made.token };
    const answers = await exchangeAnswers(
      { store: o.store, timeoutMs: o.timeoutMs, prefix, rank: index, worldSize: members.length },
      'addr',
      JSON.stringify(mine),
    );
    const peers = answers.map((a, i) => (i === index ? null : (JSON.parse(a) as NativeNetAddress)));
    const r = await addon.netConnect(made.group, peers, o.timeoutMs);
    if (!r.ok) {
      const peer = r.peer >= 0 ? members[r.peer] : undefined;
      throw new CollectiveError(r.code as CollectiveErrorCode, `socket plane setup: ${r.message}`, {
        rank: o.rank,
        peerRank: peer,
      });
    }
    return made.group;
  } catch (err) {
    await addon.netDestroy(made.group);
    throw err;
  }
}

/**
 * Agrees on the data plane with the other ranks and opens it: returns `tcp` itself for the JS path, else a group
 * whose world collectives run on the chosen native plane. Rejects with BACKEND_UNAVAILABLE when `native` is forced
 * and impossible, TIMEOUT/STORE when the store fails, TIMEOUT/PEER_LOST when the socket mesh cannot be built. Every
 * rank must call it at the same point of group creation.
 */
export async function openDataPlane(
  tcp: ProcessGroup,
  transport: TcpTransport,
  o: DataPlaneOptions,
): Promise<ProcessGroup> {
  if (o.worldSize < 2) return tcp;
  const { vote, addon } = myVote(o);
  const votes = (await exchangeAnswers(o, 'vote', JSON.stringify(vote))).map((a) => JSON.parse(a) as PlaneVote);
  const netTuning = { ...defaultNetTuning(), ...o.netTuning };
  const shmTuning = { ...defaultShmTuning(), ...o.shmTuning };
  const decision = decidePlane(votes, netTuning);
  const all = Array.from({ length: o.worldSize }, (_, i) => i);
  if (decision.plane === 'unavailable') {
    // Rank 0 serves the store and closes it when init fails: it fails only once every rank has taken this decision
    // (and said so), so that no rank loses the store while still reading the votes and reports that instead.
    await o.store.set(`${o.prefix}/refused/${o.rank}`, '1');
    if (o.rank === 0) await Promise.all(all.slice(1).map((r) => o.store.get(`${o.prefix}/refused/${r}`, o.timeoutMs)));
    throw new CollectiveError('BACKEND_UNAVAILABLE', decision.reason, { rank: o.rank });
  }
  if (decision.plane === 'js') {
    if (o.rank === 0)
      o.logger.info({ transport: 'js', reason: decision.reason }, 'collective: data plane is the JS TCP transport');
    return tcp;
  }
  const forced = votes.some((v) => v.forced);
  if (decision.plane === 'shm') {
    const plane = await mapShmSegment({
      ...o,
      prefix: `${o.prefix}/shm`,
      addon: addon!,
      mustMap: forced,
      tuning: shmTuning,
    });
    if (!plane) return tcp;
    if (o.rank === 0)
      o.logger.info(
        { transport: 'native', plane: 'shm', worldSize: o.worldSize, ...shmTuning },
        'collective: data plane is native shared memory (all ranks on one host)',
      );
    // Sub-groups of two or more ranks open planes of their own (shm-plane.ts), under this plane's prefix.
    const shm = new ShmProcessGroup(tcp, transport, plane, {
      store: o.store,
      timeoutMs: o.timeoutMs,
      logger: o.logger,
      prefix: `${o.prefix}/shm`,
      transport: o.transport,
      tuning: o.shmTuning,
    });
    // Every rank has mapped the segment before anyone can leave (and rank 0 has closed its descriptor).
    await shm.barrier();
    return shm;
  }
  const a = addon!;
  const flat = await openNetGroup(a, o, `${o.prefix}/net/flat`, all, o.rank, netTuning);
  let hier: Hierarchy | null = null;
  try {
    if (decision.hierarchical) hier = await openHierarchy(a, o, decision.hosts, netTuning, shmTuning);
  } catch (err) {
    await a.netDestroy(flat);
    throw err;
  }
  if (o.rank === 0)
    o.logger.info(
      {
        transport: 'native',
        plane: 'net',
        ...netTuning,
        hosts: decision.hosts.length,
        hierarchical: decision.hierarchical,
      },
      'collective: data plane is native sockets across hosts',
    );
  const net = new NetProcessGroup(tcp, transport, a, flat, hier, netTuning, {
    options: { ...o, prefix: `${o.prefix}/net` },
    hostIds: votes.map((v) => v.hostId),
    shmTuning,
  });
  await net.barrier();
  return net;
}

/** This rank's part of the hierarchical path. */
interface Hierarchy {
  /** Every host's ranks (global), ascending, in host order; this rank's host is `hosts[hostIndex]`. */
  readonly hosts: readonly (readonly number[])[];
  readonly hostIndex: number;
  /** The host's ranks (global), ascending; the first is the host's leader. */
  readonly hostRanks: readonly number[];
  /** Shared-memory group of the host's ranks; null when the host runs only this rank. */
  readonly local: NativeShmGroup | null;
  /** Socket group of the hosts' leaders, on leaders only. */
  readonly leaders: NativeNetGroup | null;
  /** Global rank of each leader, in leader order. */
  readonly leaderRanks: readonly number[];
}

async function openHierarchy(
  addon: NativeAddon,
  o: DataPlaneOptions,
  hosts: readonly (readonly number[])[],
  netTuning: NetTuning,
  shmTuning: ShmTuning,
): Promise<Hierarchy> {
  const hostIndex = hosts.findIndex((h) => h.includes(o.rank));
  const hostRanks = hosts[hostIndex]!;
  const leaderRanks = hosts.map((h) => h[0]!);
  let local: NativeShmGroup | null = null;
  if (hostRanks.length > 1) {
    const plane = await mapShmSegment({
      ...o,
      rank: hostRanks.indexOf(o.rank),
      worldSize: hostRanks.length,
      prefix: `${o.prefix}/hier/host${hostIndex}`,
      addon,
      // Every host must take the same path: a host that cannot map fails the group instead of falling back alone.
      mustMap: true,
      tuning: shmTuning,
    });
    local = plane!.group;
  }
  let leaders: NativeNetGroup | null = null;
  try {
    if (leaderRanks[hostIndex] === o.rank)
      leaders = await openNetGroup(addon, o, `${o.prefix}/hier/leaders`, leaderRanks, hostIndex, netTuning);
  } catch (err) {
    if (local) await addon.shmDestroy(local);
    throw err;
  }
  return { hosts, hostIndex, hostRanks, local, leaders, leaderRanks };
}

/** A native op's result; `peerRank` names the culprit's world rank when the op ran on a sub-group's numbering. */
type StageResult = NativeShmResult & { peerRank?: number };
type Stage = (timeoutMs: number) => Promise<StageResult>;
const STAGE_OK: StageResult = { ok: true, code: '', message: '', peer: -1 };

/** What the body of a hierarchical op gets from `NetProcessGroup.hierarchical`. */
interface HierarchicalOp {
  readonly chunks: number;
  /** Chunk i of a buffer of the op's element count. */
  part(b: TcpBuffer, i: number): TcpBuffer;
  /** What is left of the op's deadline, for its next native op (ms, at least 1). */
  left(): number;
  /** Counts a native op's result in the op's (the first failure is the op's). */
  add(p: Promise<StageResult>): Promise<StageResult>;
  /**
   * Starts `op` once `ready` has succeeded and the previous `inOrder` op has been started, and counts it: socket
   * stages must be submitted in chunk order, and a shm stage that completes inline on this thread can settle before
   * the previous chunk's, finished on the worker, has delivered its result. (Started, not completed: the wrapper
   * object keeps the chain from adopting the socket op's promise.)
   */
  inOrder(ready: Promise<StageResult>, op: () => Promise<StageResult>): Promise<StageResult>;
}

/** What the world group on the socket plane needs to open its sub-groups' planes (the store lives as long as it). */
interface NetSubGroupContext {
  readonly options: DataPlaneOptions;
  /** Host identity of every world rank, from the votes. */
  readonly hostIds: readonly string[];
  readonly shmTuning: ShmTuning;
}

/**
 * The world group with its collectives on the native socket plane (and allreduce and broadcast hierarchical when
 * `hier`);
 * everything else is the TCP group's. Ops on one native group run in call order on its worker thread.
 */
export class NetProcessGroup extends NativeOpsGroup implements ProcessGroup {
  readonly dataPlane = 'net' as const;
  /** 'hierarchical' when allreduce runs shm → sockets between host leaders → shm. */
  readonly layout: 'flat' | 'hierarchical';
  private chain: Promise<unknown> = Promise.resolve();
  /** Collectives called on this group so far (the index of one that timed out names its store keys). */
  private calls = 0;

  /**
   * `subGroups`: what newGroup needs to give sub-groups native planes of their own (the world group has it; a
   * sub-group's sub-groups stay on TCP). `worldRanks`: given for a sub-group (its members' world ranks, in group
   * order); its native group is then also released when the shared transport fails or closes, since no destroy of the
   * world group reaches it.
   */
  constructor(
    tcp: ProcessGroup,
    transport: Pick<TcpTransport, 'failed' | 'onFailure' | 'fail'>,
    private readonly addon: NativeAddon,
    private readonly flat: NativeNetGroup,
    private readonly hier: Hierarchy | null,
    private readonly tuning: NetTuning = defaultNetTuning(),
    private readonly subGroups?: NetSubGroupContext,
    worldRanks?: readonly number[],
  ) {
    super(tcp, transport, worldRanks);
    this.layout = hier ? 'hierarchical' : 'flat';
  }

  /** Fails every native group; `peer` is a world rank, passed to a sub-group as its index there (-1 if absent). */
  protected failNative(code: string, message: string, peer: number): void {
    const indexIn = (list: readonly number[]): number => (peer >= 0 ? list.indexOf(peer) : -1);
    this.addon.netFail(this.flat, code, message, indexIn(this.worldRanks));
    const h = this.hier;
    if (h?.leaders) this.addon.netFail(h.leaders, code, message, indexIn(h.leaderRanks));
    if (h?.local) this.addon.shmFail(h.local, code, message, indexIn(h.hostRanks));
  }

  /**
   * Runs `stage` (one native op, or a chain of them) and turns its result into the promise API. A mismatch
   * (INVALID_ARGUMENT) leaves the native group dead (its later collectives reject with the same error) but the TCP
   * group usable, as on the JS path; ranks that did not exchange with a mismatched rank fail at their timeout. When the
   * world had already failed, that error names the lost rank even where a sub-group could not (a hierarchical stage
   * without it).
   */
  private submit<T>(op: string, opts: CollectiveOptions | undefined, run: Stage, value: T, call: string): Promise<T> {
    const index = this.calls++;
    return this.track(op, opts, run, value, async (r) => {
      const mismatch = r.code === 'TIMEOUT' ? await this.mismatchBehindTimeout(index, call) : null;
      if (mismatch) return { message: mismatch, code: 'INVALID_ARGUMENT' };
      return { message: r.message, peerRank: r.peerRank ?? (r.peer >= 0 ? r.peer : undefined) };
    });
  }

  /**
   * On the hierarchical layout a size mismatch cannot always be seen by the plane: an allreduce or broadcast at or
   * below the threshold (`smallBytes`) runs on the flat group, a larger one on the host and leader groups, so ranks
   * whose sizes fall on both sides wait on different groups until their timeout. Then each such rank leaves its call under the
   * call's index in the store and reads the others' (for at most 2 s: a rank that did not time out leaves none); a
   * different call is named, both sides, as a mismatch would be. Null when none is found (a real timeout: it is then
   * reported up to 2 s later than it would be on the flat layout).
   */
  private async mismatchBehindTimeout(index: number, call: string): Promise<string | null> {
    const o = this.subGroups?.options;
    if (!this.hier || !o) return null;
    const key = (r: number): string => `${o.prefix}/timed-out/${index}/${r}`;
    try {
      await o.store.set(key(this.rank), call);
    } catch {
      return null; // the store is gone too: the timeout is what can be told
    }
    // Every rank's, not just the first different one: a rank that failed the world before the others had left
    // theirs would make them see PEER_LOST instead.
    const waitMs = Math.min(2_000, this.timeoutMs);
    const calls = await Promise.all(
      Array.from({ length: this.worldSize }, (_, r) =>
        r === this.rank
          ? call
          : o.store.get(key(r), waitMs).then(
              (b) => new TextDecoder().decode(b),
              () => null,
            ),
      ),
    );
    const r = calls.findIndex((c) => c !== null && c !== call);
    if (r < 0) return null;
    return (
      `collective mismatch between ranks: rank ${this.rank} called ${call} but rank ${r} called ${calls[r]} ` +
      `(seen after both timed out: on the hierarchical layout an allreduce or broadcast of at most ${this.tuning.smallBytes} bytes ` +
      `runs on the flat group and a larger one on the host groups)`
    );
  }

  private flatOp({ kind, dtype, rop, root, count, send, recv }: NativeCall): Stage {
    const toWorld = (r: NativeShmResult): StageResult =>
      r.ok || r.peer < 0 || !this.isSubGroup
        ? r
        : {
            ...r,
            peerRank: this.worldRanks[r.peer],
            message: `${r.message} [in the sub-group of world ranks ${this.worldRanks.join(', ')}, group rank ${r.peer} is world rank ${this.worldRanks[r.peer]}]`,
          };
    return (timeoutMs) =>
      this.addon.netSubmit(this.flat, kind, dtype, rop, root, count, send, recv, timeoutMs).then(toWorld);
  }
  /**
   * Small payloads take the flat group even on the hierarchical layout: three stages with two hand-offs through the
   * JS thread cost more than they save there (bench/allreduce, 2×2 on loopback: hierarchical
   * at 0.51× the flat group's bandwidth at 4 KB, 0.76× at 64 KB, 1.03× at 256 KB, 1.16× at 1 MB).
   */
  private useHierarchy(b: TcpBuffer): boolean {
    return this.hier !== null && b.byteLength > this.tuning.smallBytes;
  }

  /**
   * shm reduce to the host leader → socket allreduce among leaders → shm broadcast, chunk by chunk in the order of
   * `hierarchicalSchedule`.
   */
  private hierAllreduce({ dtype, rop, count, send, recv }: Required<NativeCall>): Stage {
    const h = this.hier!;
    const a = this.addon;
    const sum = rop === ShmOp.avg ? ShmOp.sum : rop;
    return this.hierarchical(count, send.BYTES_PER_ELEMENT, async (o) => {
      const local = (p: Promise<NativeShmResult>): Promise<StageResult> => p.then(this.globalOf(h.hostRanks));
      const across = (i: number): Promise<StageResult> => {
        const b = o.part(recv, i);
        return a
          .netSubmit(h.leaders!, ShmKind.allreduce, dtype, rop, 0, b.length, b, b, o.left(), this.worldSize)
          .then(this.globalOf(h.leaderRanks));
      };
      if (!h.local) {
        // A host of one rank: it is the leader; only the socket stage.
        if (send !== recv) recv.set(send as never);
        for (let i = 0; i < o.chunks; i++) o.add(across(i));
        return;
      }
      const nets: Promise<StageResult>[] = [];
      for (const { stage, chunk: i } of hierarchicalSchedule(o.chunks)) {
        const b = o.part(recv, i);
        if (stage === 'reduce') {
          const reduced = o.add(
            local(a.shmSubmit(h.local, ShmKind.reduce, dtype, sum, 0, b.length, o.part(send, i), b, o.left())),
          );
          if (h.leaders) nets[i] = o.inOrder(reduced, () => across(i));
        } else {
          if (h.leaders && !(await nets[i]!).ok) break;
          o.add(local(a.shmSubmit(h.local, ShmKind.broadcast, dtype, 0, 0, b.length, undefined, b, o.left())));
        }
      }
    });
  }

  /**
   * The root's host: a shm broadcast from the root when it is not the host's leader; then a socket broadcast among
   * the leaders from the root's host; then on every other host of several ranks a shm broadcast from its leader. Chunk
   * by chunk (`chunkBytes`): a leader forwards chunk i as soon as it has it, while the next chunks are still coming.
   * So each byte crosses between hosts once per host, not once per rank.
   */
  private hierBroadcast({ dtype, root, count, recv }: NativeCall & { recv: TcpBuffer }): Stage {
    const h = this.hier!;
    const a = this.addon;
    const rootHost = h.hosts.findIndex((ranks) => ranks.includes(root));
    const rootLocal = h.hosts[rootHost]!.indexOf(root);
    const onRootHost = h.hostIndex === rootHost;
    // On the root's host, with a root that is not the leader, the root's own shm broadcast serves the whole host.
    const fromRoot = onRootHost && rootLocal !== 0 && h.local !== null;
    return this.hierarchical(count, recv.BYTES_PER_ELEMENT, async (o) => {
      const onHost = (from: number, i: number): Promise<StageResult> => {
        const b = o.part(recv, i);
        return a
          .shmSubmit(h.local!, ShmKind.broadcast, dtype, 0, from, b.length, undefined, b, o.left())
          .then(this.globalOf(h.hostRanks));
      };
      const across = (i: number): Promise<StageResult> => {
        const b = o.part(recv, i);
        return a
          .netSubmit(
            h.leaders!,
            ShmKind.broadcast,
            dtype,
            0,
            rootHost,
            b.length,
            undefined,
            b,
            o.left(),
            this.worldSize,
          )
          .then(this.globalOf(h.leaderRanks));
      };
      const nets: Promise<StageResult>[] = [];
      for (let i = 0; i < o.chunks; i++) {
        const have = fromRoot ? o.add(onHost(rootLocal, i)) : Promise.resolve(STAGE_OK);
        if (h.leaders) nets[i] = o.inOrder(have, () => across(i));
      }
      if (!h.local || fromRoot) return;
      for (let i = 0; i < o.chunks; i++) {
        if (h.leaders && !onRootHost && !(await nets[i]!).ok) break;
        o.add(onHost(0, i));
      }
    });
  }

  /**
   * A hierarchical op over `count` elements of `elementBytes`: `body` starts its native ops chunk by chunk
   * (`chunkBytes`) under one deadline; the op's result is their first failure, else ok. Whole hierarchical ops are
   * chained in call order, so that every rank of a host submits the stages to its groups in the same order.
   */
  private hierarchical(count: number, elementBytes: number, body: (o: HierarchicalOp) => Promise<void>): Stage {
    const perChunk = Math.max(1, Math.floor(this.tuning.chunkBytes / elementBytes));
    const chunks = Math.max(1, Math.ceil(count / perChunk));
    return (timeoutMs) => {
      const run = async (): Promise<StageResult> => {
        const deadline = Date.now() + timeoutMs;
        const all: Promise<StageResult>[] = [];
        let order: Promise<unknown> = Promise.resolve();
        const add = (p: Promise<StageResult>): Promise<StageResult> => (all.push(p), p);
        await body({
          chunks,
          part: (b, i) => b.subarray(i * perChunk, Math.min(count, (i + 1) * perChunk)),
          left: () => Math.max(1, deadline - Date.now()),
          add,
          inOrder(ready, op) {
            const started = order.then(() => ready).then((r) => ({ op: r.ok ? op() : Promise.resolve(r) }));
            order = started;
            return add(started.then((x) => x.op));
          },
        });
        const results = await Promise.all(all);
        return results.find((r) => !r.ok) ?? STAGE_OK;
      };
      const p = this.chain.then(run, run);
      this.chain = p.catch(() => undefined);
      return p;
    };
  }

  /** Sub-groups name ranks by their index there; the error names the world rank (and says so when they differ). */
  private globalOf(list: readonly number[]): (r: NativeShmResult) => StageResult {
    return (r) =>
      r.ok || r.peer < 0
        ? r
        : {
            ...r,
            peerRank: list[r.peer],
            message:
              list[r.peer] === r.peer ? r.message : `${r.message} [group rank ${r.peer} is rank ${list[r.peer]}]`,
          };
  }

  /** One checked operation: allreduce and broadcast take the hierarchical path when the layout and the size call for it. */
  protected runOp<T>(op: string, opts: CollectiveOptions | undefined, call: NativeCall, value: T): Promise<T> {
    const { kind, send, recv } = call;
    const stage =
      kind === ShmKind.allreduce && this.useHierarchy(send!)
        ? this.hierAllreduce({ ...call, send: send!, recv: recv! })
        : kind === ShmKind.broadcast && this.useHierarchy(recv!)
          ? this.hierBroadcast({ ...call, recv: recv! })
          : this.flatOp(call);
    return this.submit(op, opts, stage, value, describeCall(call));
  }

  /**
   * Every rank of this group calls it with the same list (validated by the TCP group, which throws INVALID_ARGUMENT
   * on every rank alike). A sub-group of two or more members gets a native plane of its own: shared memory when its
   * members share a host (falling back to its TCP group on every member alike if one cannot map the segment), else a
   * socket group of its members (flat). Rejects with TIMEOUT/STORE (store) or TIMEOUT/PEER_LOST (the mesh).
   */
  async newGroup(ranks: readonly number[]): Promise<ProcessGroup | null> {
    const { sub, index } = await this.newTcpGroup(ranks);
    const ctx = this.subGroups;
    if (!ctx || !sub || sub.worldSize < 2) return sub;
    const members = ranks.map((i) => this.worldRanks[i]!);
    const prefix = `${ctx.options.prefix}/sub/${index}`;
    const o = ctx.options;
    if (new Set(members.map((m) => ctx.hostIds[m])).size === 1) {
      const plane = await mapShmSegment({
        ...o,
        rank: sub.rank,
        worldSize: sub.worldSize,
        prefix: `${prefix}/shm`,
        addon: this.addon,
        mustMap: false,
        tuning: ctx.shmTuning,
      });
      if (!plane) return sub;
      const group = new ShmProcessGroup(sub, this.transport, plane, undefined, members);
      await group.barrier();
      return group;
    }
    const flat = await openNetGroup(this.addon, o, `${prefix}/net`, members, sub.rank, this.tuning);
    const group = new NetProcessGroup(sub, this.transport, this.addon, flat, null, this.tuning, undefined, members);
    await group.barrier();
    return group;
  }

  /**
   * Fault tests only: writes raw bytes on this rank's data socket to `peer` (world rank), in queue order; the peer's
   * next collective must fail with a corrupt-frame PEER_LOST naming this rank.
   */
  async injectRawBytes(peer: number, bytes: Uint8Array): Promise<void> {
    await this.addon.netInject(this.flat, peer, bytes);
  }

  protected async destroyNative(): Promise<void> {
    await this.addon.netDestroy(this.flat);
    if (this.hier?.leaders) await this.addon.netDestroy(this.hier.leaders);
    if (this.hier?.local) await this.addon.shmDestroy(this.hier.local);
  }
}
