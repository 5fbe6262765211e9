// The rendezvous contract suite, run against every backend (embedded.test.ts, etcd.test.ts).
// Each test uses its own runId, so tests may share one backend instance (one etcd).
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import {
  type JobStatus,
  type NodeDescriptor,
  type RendezvousConfig,
  type RendezvousEvent,
  type RendezvousHandler,
  type RoundInfo,
  RendezvousClosedError,
  RendezvousConfigError,
  RendezvousError,
  RendezvousTimeoutError,
} from '../../../rendezvous/api.js';
import { RDZV_DEFAULTS } from '../../../rendezvous/config.js';
import { withTimeout } from '../../../common/timeout.js';

export interface ContractBackend {
  /** Creates and starts a handler for `config` (the same runId = the same job). */
  create(config: RendezvousConfig, self: NodeDescriptor): Promise<RendezvousHandler>;
  /** Starts a member that can die or stall apart from the test's own handlers, and calls next() on it. */
  spawnMember(config: RendezvousConfig, self: NodeDescriptor): Promise<SpawnedMember>;
  dispose(): Promise<void>;
}

/** A member whose agent runs apart from the test's handlers (its own process where the backend allows). */
export interface SpawnedMember {
  readonly nodeId: string;
  /** Its first round. */
  readonly round: Promise<RoundInfo>;
  /** Its agent dies without leaving (SIGKILL; in process: a crash-like close()); its lease stays valid. Idempotent. */
  kill(): Promise<void>;
  /** Stops / resumes its agent process (SIGSTOP / SIGCONT); null where members share the test's process. */
  readonly stall: { stop(): void; resume(): void } | null;
}

/** Bounded wait: rejects after `ms` so a broken backend fails the test instead of hanging it. */
/** A node of one worker on loopback, its id `label` and a random suffix (unique across runs on one etcd). */
export const self = (label: string) => ({
  nodeId: `${label}-${randomUUID().slice(0, 6)}`,
  host: label,
  addr: '127.0.0.1',
  masterPort: 29_500,
  localWorldSize: 1,
});

export function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return withTimeout(p, ms, what, () => new Error(`${what}: not within ${ms} ms`));
}

/** Records a handler's events and resolves waits for a matching one. */
export class EventLog {
  readonly events: RendezvousEvent[] = [];
  private waiters: { pred: (e: RendezvousEvent) => boolean; resolve: (e: RendezvousEvent) => void }[] = [];
  constructor(handler: RendezvousHandler) {
    handler.watch((e) => {
      this.events.push(e);
      this.waiters = this.waiters.filter((w) => (w.pred(e) ? (w.resolve(e), false) : true));
    });
  }
  waitFor(pred: (e: RendezvousEvent) => boolean, ms: number, what: string): Promise<RendezvousEvent> {
    const seen = this.events.find(pred);
    if (seen) return Promise.resolve(seen);
    return within(new Promise((resolve) => this.waiters.push({ pred, resolve })), ms, what);
  }
  types(): string[] {
    return this.events.map((e) => (e.type === 'round-ended' ? `round-ended:${e.round}:${e.reason}` : e.type));
  }
}

const WAIT_MS = 15_000;

export function runRendezvousContract(
  name: string,
  makeBackend: () => Promise<ContractBackend>,
  opts: { leaseTtlMs: number },
): void {
  describe(`rendezvous contract: ${name}`, () => {
    let backend: ContractBackend;
    const open: RendezvousHandler[] = [];
    const spawned: SpawnedMember[] = [];

    before(async () => {
      backend = await makeBackend();
    });
    after(async () => {
      await Promise.allSettled(spawned.map((m) => m.kill()));
      await Promise.allSettled(open.map((h) => h.close()));
      await backend?.dispose();
    });

    const job = (over: Partial<RendezvousConfig> = {}): RendezvousConfig => ({
      ...RDZV_DEFAULTS,
      runId: `t-${randomUUID().slice(0, 8)}`,
      minNodes: 1,
      maxNodes: 1,
      lastCallTimeoutMs: 200,
      joinTimeoutMs: 20_000,
      leaseTtlMs: opts.leaseTtlMs,
      readTimeoutMs: 5_000,
      ...over,
    });
    let seq = 0;
    const node = (label: string): NodeDescriptor => {
      seq++;
      return {
        nodeId: `${label}-${seq}-${randomUUID().slice(0, 6)}`,
        host: `host-${label}`,
        addr: '127.0.0.1',
        masterPort: 29_000 + seq,
        localWorldSize: 2,
      };
    };
    const nodes = async (config: RendezvousConfig, n: number): Promise<RendezvousHandler[]> => {
      const hs: RendezvousHandler[] = [];
      for (let i = 0; i < n; i++) {
        const h = await backend.create(config, node(`n${i}`));
        open.push(h);
        hs.push(h);
      }
      return hs;
    };
    const spawnMember = async (config: RendezvousConfig, self: NodeDescriptor): Promise<SpawnedMember> => {
      const m = await backend.spawnMember(config, self);
      spawned.push(m);
      return m;
    };
    const nextAll = (hs: RendezvousHandler[], what: string): Promise<RoundInfo[]> =>
      within(Promise.all(hs.map((h) => h.next())), WAIT_MS, what);
    const strip = (r: RoundInfo): Omit<RoundInfo, 'groupRank'> => {
      const { groupRank: _g, ...rest } = r;
      return rest;
    };

    test('two nodes form round 0 with ranks 0 and 1 and the same round everywhere', async () => {
      const config = job({ minNodes: 2, maxNodes: 2 });
      const hs = await nodes(config, 2);
      const rounds = await nextAll(hs, 'round 0');
      assert.deepEqual(rounds.map((r) => r.groupRank).sort(), [0, 1]);
      assert.deepEqual(strip(rounds[0]!), strip(rounds[1]!));
      const r = rounds[0]!;
      assert.equal(r.round, 0);
      assert.equal(r.groupWorldSize, 2);
      assert.equal(r.failureRestarts, 0);
      assert.deepEqual(r.master, { addr: r.members[0]!.addr, port: r.members[0]!.masterPort });
      for (const [i, h] of hs.entries()) assert.equal(r.members[rounds[i]!.groupRank]!.nodeId, h.self.nodeId);
    });

    test('three nodes with max 3 close at once without waiting for the last call', async () => {
      const config = job({ minNodes: 2, maxNodes: 3, lastCallTimeoutMs: 600_000 });
      const hs = await nodes(config, 3);
      const rounds = await nextAll(hs, 'round of 3 at max');
      assert.deepEqual(rounds.map((r) => r.groupRank).sort(), [0, 1, 2]);
      assert.ok(rounds.every((r) => r.groupWorldSize === 3 && r.round === 0));
    });

    test('a round with at least min nodes closes after the last call', async () => {
      const config = job({ minNodes: 2, maxNodes: 4, lastCallTimeoutMs: 300 });
      const hs = await nodes(config, 2);
      const rounds = await nextAll(hs, 'round of 2 after last call');
      assert.ok(rounds.every((r) => r.groupWorldSize === 2));
    });

    test('below min, next() fails with RendezvousTimeoutError after the join timeout', async () => {
      const config = job({ minNodes: 2, maxNodes: 2, joinTimeoutMs: 500 });
      const [h] = await nodes(config, 1);
      await assert.rejects(within(h!.next(), WAIT_MS, 'join timeout'), (err: unknown) => {
        assert.ok(err instanceof RendezvousTimeoutError);
        assert.equal(err.code, 'TIMEOUT');
        assert.equal(err.terminal, true);
        assert.match(err.message, /1 node\(s\) joined, min is 2/);
        return true;
      });
    });

    test('a second next() while one waits is BUSY (not terminal); leave() aborts the first (ABORTED, terminal)', async () => {
      const config = job({ minNodes: 2, maxNodes: 2 });
      const [h] = await nodes(config, 1);
      const first = h!.next();
      const firstSettled = first.then(
        () => null,
        (err: unknown) => err,
      );
      await assert.rejects(h!.next(), { code: 'BUSY', terminal: false });
      await h!.leave();
      const err = await within(firstSettled, WAIT_MS, 'the waiting next() to end');
      assert.ok(err instanceof RendezvousError, String(err));
      assert.equal(err.code, 'ABORTED');
      assert.equal(err.terminal, true);
    });

    test('endRound(failure) ends the round for the others, counts a restart and keeps ranks sticky', async () => {
      const config = job({ minNodes: 3, maxNodes: 3 });
      const hs = await nodes(config, 3);
      const r0 = await nextAll(hs, 'round 0');
      const logs = hs.map((h) => new EventLog(h));
      const failing = hs[1]!;
      await failing.endRound({ reason: 'failure', detail: 'rank 3 exited 1' });
      for (const i of [0, 2]) {
        const e = await logs[i]!.waitFor((e) => e.type === 'round-ended', WAIT_MS, 'round-ended');
        assert.deepEqual(e, {
          type: 'round-ended',
          round: 0,
          reason: 'failure',
          byNodeId: failing.self.nodeId,
          detail: 'rank 3 exited 1',
        });
      }
      const r1 = await nextAll(hs, 'round 1');
      assert.ok(r1.every((r) => r.round === 1 && r.failureRestarts === 1));
      assert.deepEqual(
        r1.map((r) => r.groupRank),
        r0.map((r) => r.groupRank),
      );
    });

    test('a node arriving during a running round is announced, then the round ends for scale-up and the next round includes it', async () => {
      const config = job({ minNodes: 2, maxNodes: 3, lastCallTimeoutMs: 200 });
      const hs = await nodes(config, 2);
      const r0 = await nextAll(hs, 'round 0');
      const logs = hs.map((h) => new EventLog(h));
      const [late] = await nodes(config, 1);
      const lateRound = late!.next();
      for (const log of logs) {
        await log.waitFor((e) => e.type === 'nodes-waiting', WAIT_MS, 'nodes-waiting');
        await log.waitFor((e) => e.type === 'round-ended' && e.reason === 'scale-up', WAIT_MS, 'round-ended scale-up');
        assert.deepEqual(log.types(), ['nodes-waiting', 'round-ended:0:scale-up']);
      }
      const r1 = await within(Promise.all([...hs.map((h) => h.next()), lateRound]), WAIT_MS, 'round 1');
      assert.ok(r1.every((r) => r.round === 1 && r.groupWorldSize === 3 && r.failureRestarts === 0));
      assert.equal(r1[2]!.groupRank, 2);
      assert.deepEqual([r1[0]!.groupRank, r1[1]!.groupRank], [r0[0]!.groupRank, r0[1]!.groupRank]);
    });

    test('a node beyond max waits without disturbing the running round and gets the place a leaving node frees', async () => {
      const config = job({ minNodes: 1, maxNodes: 2, lastCallTimeoutMs: 200 });
      const hs = await nodes(config, 2);
      await nextAll(hs, 'round 0');
      const logs = hs.map((h) => new EventLog(h));
      const [extra] = await nodes(config, 1);
      const extraRound = extra!.next();
      // Once the members see the extra node registered, nobody counts it as waiting and no event fires.
      const sees = (h: RendezvousHandler): boolean =>
        (h as unknown as { status(): JobStatus }).status().waiting.some((w) => w.nodeId === extra!.self.nodeId);
      await within(
        (async () => {
          while (!hs.every(sees)) await new Promise((r) => setTimeout(r, 20));
        })(),
        WAIT_MS,
        'extra node visible',
      );
      await new Promise((r) => setTimeout(r, 100));
      assert.deepEqual(
        hs.map((h) => h.numNodesWaiting()),
        [0, 0],
      );
      assert.deepEqual(
        logs.map((l) => l.types()),
        [[], []],
      );
      await hs[1]!.leave();
      await logs[0]!.waitFor((e) => e.type === 'round-ended' && e.reason === 'member-left', WAIT_MS, 'member-left');
      const [r1a, r1x] = await within(Promise.all([hs[0]!.next(), extraRound]), WAIT_MS, 'round 1');
      assert.deepEqual([r1a.round, r1a.groupWorldSize, r1x.round, r1x.groupWorldSize], [1, 2, 1, 2]);
    });

    test('a clean leave ends the round for the others at once with reason member-left', async () => {
      const config = job({ minNodes: 1, maxNodes: 2, leaseTtlMs: 60_000 });
      const hs = await nodes(config, 2);
      await nextAll(hs, 'round 0');
      const log = new EventLog(hs[0]!);
      await hs[1]!.leave();
      // With a 60 s lease, only the leave itself can end the round within the wait.
      const e = await log.waitFor((e) => e.type === 'round-ended', WAIT_MS, 'round-ended member-left');
      assert.deepEqual(e, { type: 'round-ended', round: 0, reason: 'member-left', byNodeId: hs[1]!.self.nodeId });
      const [r1] = await nextAll([hs[0]!], 'round 1 alone');
      assert.equal(r1!.groupWorldSize, 1);
      assert.equal(r1!.groupRank, 0);
    });

    test('a crashed node (closed without leave) is noticed after the lease TTL with reason member-lost', async () => {
      const config = job({ minNodes: 1, maxNodes: 2 });
      const hs = await nodes(config, 2);
      await nextAll(hs, 'round 0');
      const log = new EventLog(hs[0]!);
      await hs[1]!.close();
      const e = await log.waitFor((e) => e.type === 'round-ended', WAIT_MS, 'round-ended member-lost');
      assert.deepEqual(e, { type: 'round-ended', round: 0, reason: 'member-lost', byNodeId: hs[1]!.self.nodeId });
      const [r1] = await nextAll([hs[0]!], 'round 1 alone');
      assert.equal(r1!.groupWorldSize, 1);
    });

    test('probeMembers evicts a member whose agent died while its lease is valid, and every survivor sees member-lost at once', async (t) => {
      // A 60 s lease: within the waits below only the probe can make the loss visible.
      const config = job({ minNodes: 2, maxNodes: 3, lastCallTimeoutMs: 60_000, leaseTtlMs: 60_000 });
      const hs = await nodes(config, 2);
      const victim = await spawnMember(config, node('victim'));
      const r0 = await within(Promise.all([...hs.map((h) => h.next()), victim.round]), WAIT_MS, 'round 0');
      assert.ok(r0.every((r) => r.round === 0 && r.groupWorldSize === 3));
      const logs = hs.map((h) => new EventLog(h));
      await victim.kill();
      const t0 = performance.now();
      assert.deepEqual(await within(hs[0]!.probeMembers(2_000), WAIT_MS, 'probe'), [victim.nodeId]);
      for (const log of logs) {
        const e = await log.waitFor((e) => e.type === 'round-ended', WAIT_MS, 'round-ended member-lost');
        assert.deepEqual(e, { type: 'round-ended', round: 0, reason: 'member-lost', byNodeId: victim.nodeId });
      }
      t.diagnostic(`every survivor saw the loss ${Math.round(performance.now() - t0)} ms after the probe began`);
      const r1 = await nextAll(hs, 'round 1 without the dead member');
      assert.ok(r1.every((r) => r.round === 1 && r.groupWorldSize === 2));
      // Probing again finds nobody to evict.
      assert.deepEqual(await within(hs[1]!.probeMembers(2_000), WAIT_MS, 'second probe'), []);
    });

    test('probeMembers leaves a member that is alive but stalled: no eviction, the round goes on', async () => {
      const config = job({ minNodes: 2, maxNodes: 2, leaseTtlMs: 60_000 });
      const [h] = await nodes(config, 1);
      const slow = await spawnMember(config, node('slow'));
      await within(Promise.all([h!.next(), slow.round]), WAIT_MS, 'round 0');
      const log = new EventLog(h!);
      slow.stall?.stop();
      try {
        assert.deepEqual(await within(h!.probeMembers(300), WAIT_MS, 'probe'), []);
        // An eviction would reach our own watch within this pause.
        await new Promise((r) => setTimeout(r, 300));
        assert.deepEqual(log.types(), []);
        const status = (h as unknown as { status(): JobStatus }).status();
        assert.ok(status.members.some((m) => m.nodeId === slow.nodeId));
      } finally {
        slow.stall?.resume();
      }
      await assert.rejects(h!.probeMembers(0), (err: unknown) => {
        assert.ok(err instanceof RendezvousConfigError);
        assert.match(err.message, /probeMembers\(timeoutMs = 0\): expected a number of milliseconds > 0/);
        return true;
      });
    });

    test('after markClosed, next() throws RendezvousClosedError on every node', async () => {
      const config = job({ minNodes: 2, maxNodes: 2 });
      const hs = await nodes(config, 2);
      await nextAll(hs, 'round 0');
      const log = new EventLog(hs[1]!);
      await hs[0]!.markClosed();
      await log.waitFor((e) => e.type === 'round-ended' && e.reason === 'closed', WAIT_MS, 'round-ended closed');
      for (const h of hs) await assert.rejects(within(h.next(), WAIT_MS, 'next after close'), RendezvousClosedError);
      const [late] = await nodes(config, 1);
      await assert.rejects(within(late!.next(), WAIT_MS, 'late next after close'), RendezvousClosedError);
    });

    test('a finished job id can be run again once nobody is left in it', async () => {
      const config = job({ minNodes: 1, maxNodes: 1 });
      const [first] = await nodes(config, 1);
      await within(first!.next(), WAIT_MS, 'first run');
      await first!.markClosed();
      await first!.leave();
      const [again] = await nodes(config, 1);
      const r = await within(again!.next(), WAIT_MS, 'second run');
      assert.deepEqual([r.round, r.groupRank, r.failureRestarts], [0, 0, 0]);
    });

    test('a node joining a job whose running round lost all its members starts the next round', async () => {
      const config = job({ minNodes: 1, maxNodes: 2 });
      const hs = await nodes(config, 2);
      await nextAll(hs, 'round 0');
      await Promise.all(hs.map((h) => h.close())); // both agents killed
      const [late] = await nodes(config, 1);
      const r = await within(late!.next(), WAIT_MS, 'round after the crash');
      assert.equal(r.round, 1);
      assert.equal(r.groupWorldSize, 1);
    });

    test('two jobs with different run ids do not interfere', async () => {
      const a = job({ minNodes: 2, maxNodes: 2 });
      const b = job({ minNodes: 1, maxNodes: 1 });
      const ha = await nodes(a, 2);
      const [hb] = await nodes(b, 1);
      const [ra, rb] = await Promise.all([nextAll(ha, 'job a'), nextAll([hb!], 'job b')]);
      assert.ok(ra.every((r) => r.groupWorldSize === 2 && r.runId === a.runId));
      assert.equal(rb[0]!.groupWorldSize, 1);
      assert.equal(rb[0]!.runId, b.runId);
      await ha[0]!.endRound({ reason: 'failure' });
      const rb1 = await nextAll([hb!], 'job b round 1');
      assert.equal(rb1[0]!.failureRestarts, 0);
    });

    test('a single node (min = max = 1) gets rounds 0, 1, 2 at once, and endRound and leave work', async () => {
      const config = job({ minNodes: 1, maxNodes: 1 });
      const [h] = await nodes(config, 1);
      const seen: number[] = [];
      for (let i = 0; i < 3; i++) seen.push((await within(h!.next(), WAIT_MS, `round ${i}`)).round);
      assert.deepEqual(seen, [0, 1, 2]);
      await h!.endRound({ reason: 'failure' });
      const r3 = await within(h!.next(), WAIT_MS, 'round 3');
      assert.equal(r3.round, 3);
      assert.equal(r3.failureRestarts, 1);
      await h!.leave();
      await assert.rejects(h!.next(), { code: 'STATE', terminal: true });
    });
  });
}
