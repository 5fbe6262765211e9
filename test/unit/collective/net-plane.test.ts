import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { resolveWorkerConfig } from '../../../collective/index.js';
import {
  decidePlane,
  defaultNetTuning,
  hierarchicalSchedule,
  type PlaneDecision,
  type PlaneVote,
} from '../../../collective/net-plane.js';
import { hostIdentity } from '../../../collective/host-identity.js';

const env = { RANK: '0', WORLD_SIZE: '2', MASTER_ADDR: '127.0.0.1', MASTER_PORT: '29500' };
const vote = (hostId: string, o: Partial<PlaneVote> = {}): PlaneVote => ({
  hostId,
  veto: '',
  netVeto: '',
  forced: false,
  ...o,
});
const forced = (hostId: string, o: Partial<PlaneVote> = {}): PlaneVote => vote(hostId, { forced: true, ...o });

describe('choosing the data plane across hosts', () => {
  const table: { name: string; votes: PlaneVote[]; hierarchical?: boolean; want: PlaneDecision }[] = [
    { name: 'all ranks on one host: shared memory', votes: [vote('h'), vote('h'), vote('h')], want: { plane: 'shm' } },
    {
      name: 'one rank per host: the flat socket plane',
      votes: [vote('a'), vote('b'), vote('c')],
      want: { plane: 'net', hosts: [[0], [1], [2]], hierarchical: false },
    },
    {
      name: 'two hosts of two ranks: hierarchical, hosts ordered by their lowest rank',
      votes: [vote('b'), vote('a'), vote('b'), vote('a')],
      want: {
        plane: 'net',
        hosts: [
          [0, 2],
          [1, 3],
        ],
        hierarchical: true,
      },
    },
    {
      name: 'one host with two ranks and one with one: hierarchical',
      votes: [vote('a'), vote('a'), vote('b')],
      want: { plane: 'net', hosts: [[0, 1], [2]], hierarchical: true },
    },
    {
      name: 'several ranks per host with the hierarchy turned off: flat',
      votes: [vote('a'), vote('a'), vote('b'), vote('b')],
      hierarchical: false,
      want: {
        plane: 'net',
        hosts: [
          [0, 1],
          [2, 3],
        ],
        hierarchical: false,
      },
    },
    {
      name: 'one rank without the addon moves everyone to js, naming it',
      votes: [vote('a'), vote('b', { veto: 'addon missing' })],
      want: { plane: 'js', reason: 'rank 1: addon missing' },
    },
    {
      name: 'TENSILE_COLLECTIVE_TRANSPORT=js on one rank moves everyone to js',
      votes: [vote('a', { veto: 'TENSILE_COLLECTIVE_TRANSPORT=js' }), vote('b')],
      want: { plane: 'js', reason: 'rank 0: TENSILE_COLLECTIVE_TRANSPORT=js' },
    },
    {
      name: 'an addon without the socket plane: js across hosts',
      votes: [vote('a'), vote('b', { netVeto: 'old addon' })],
      want: { plane: 'js', reason: 'the ranks run on 2 hosts and rank 1: old addon' },
    },
    {
      name: 'an addon without the socket plane does not matter on one host',
      votes: [vote('h'), vote('h', { netVeto: 'old addon' })],
      want: { plane: 'shm' },
    },
    {
      name: 'native forced but the addon is missing: unavailable, naming why',
      votes: [forced('a'), forced('b', { veto: 'addon missing' })],
      want: {
        plane: 'unavailable',
        reason: 'TENSILE_COLLECTIVE_TRANSPORT=native: no native data plane: rank 1: addon missing',
      },
    },
    {
      name: 'native forced on one rank and js on another: unavailable',
      votes: [forced('a'), vote('a', { veto: 'TENSILE_COLLECTIVE_TRANSPORT=js' })],
      want: {
        plane: 'unavailable',
        reason: 'TENSILE_COLLECTIVE_TRANSPORT=native: no native data plane: rank 1: TENSILE_COLLECTIVE_TRANSPORT=js',
      },
    },
    {
      name: 'native forced across hosts with the socket plane: net',
      votes: [forced('a'), forced('b')],
      want: { plane: 'net', hosts: [[0], [1]], hierarchical: false },
    },
  ];
  for (const row of table)
    it(row.name, () => assert.deepEqual(decidePlane(row.votes, { hierarchical: row.hierarchical ?? true }), row.want));

  it('TENSILE_HOST_ID replaces the host identity (hosts simulated on one machine)', () => {
    assert.equal(hostIdentity({ TENSILE_HOST_ID: 'a' }), 'id:a');
    assert.notEqual(hostIdentity({ TENSILE_HOST_ID: 'a' }), hostIdentity({ TENSILE_HOST_ID: 'b' }));
    assert.equal(hostIdentity({}), hostIdentity({ TENSILE_HOST_ID: '' }));
    assert.doesNotMatch(hostIdentity({}), /^id:/);
  });

  it('parses the socket-plane tuning variables with their bounds, quoting a bad value', () => {
    const c = resolveWorkerConfig(
      {},
      { ...env, TENSILE_NET_SMALL_BYTES: '0', TENSILE_NET_SEGMENT_BYTES: '8192', TENSILE_NET_HIERARCHY: '0' },
    );
    assert.deepEqual(c.netTuning, { smallBytes: 0, segmentBytes: 8192, hierarchical: false });
    assert.deepEqual(resolveWorkerConfig({}, env).netTuning, {});
    assert.throws(
      () => resolveWorkerConfig({}, { ...env, TENSILE_NET_HIERARCHY: 'yes' }),
      /TENSILE_NET_HIERARCHY="yes": expected an integer in \[0, 1\]/,
    );
    assert.throws(
      () => resolveWorkerConfig({}, { ...env, TENSILE_NET_SEGMENT_BYTES: '100' }),
      /TENSILE_NET_SEGMENT_BYTES="100": expected an integer in \[4096, 1073741824\]/,
    );
  });

  it('defaults: recursive doubling up to 64 KiB, 256 KiB segments, hierarchical in 1 MiB chunks', () => {
    assert.deepEqual(defaultNetTuning(), {
      smallBytes: 64 << 10,
      segmentBytes: 256 << 10,
      hierarchical: true,
      chunkBytes: 1 << 20,
    });
  });
});

describe('the pipelined schedule of the hierarchical allreduce', () => {
  const text = (chunks: number): string =>
    hierarchicalSchedule(chunks)
      .map((s) => `${s.stage[0]}${s.chunk}`)
      .join(' ');

  it('is exactly reduce, reduce, then broadcast i−1 and reduce i+1, then the last broadcast', () => {
    assert.equal(text(1), 'r0 b0');
    assert.equal(text(2), 'r0 r1 b0 b1');
    assert.equal(text(3), 'r0 r1 b0 r2 b1 b2');
    assert.equal(text(5), 'r0 r1 b0 r2 b1 r3 b2 r4 b3 b4');
  });

  it('reduces and broadcasts every chunk once, in order, the reduce first, never more than two chunks ahead', () => {
    for (let chunks = 1; chunks <= 40; chunks++) {
      const s = hierarchicalSchedule(chunks);
      const reduces = s.filter((x) => x.stage === 'reduce').map((x) => x.chunk);
      const broadcasts = s.filter((x) => x.stage === 'broadcast').map((x) => x.chunk);
      const all = Array.from({ length: chunks }, (_, i) => i);
      assert.deepEqual(reduces, all, `${chunks} chunks: reduces`);
      assert.deepEqual(broadcasts, all, `${chunks} chunks: broadcasts`);
      s.forEach((x, at) => {
        if (x.stage !== 'broadcast') return;
        const before = s.slice(0, at);
        assert.ok(
          before.some((y) => y.stage === 'reduce' && y.chunk === x.chunk),
          `b${x.chunk} after r${x.chunk}`,
        );
        // Overlap: the next chunk's reduce is queued before this broadcast (its socket stage can run meanwhile).
        if (x.chunk + 1 < chunks)
          assert.ok(
            before.some((y) => y.stage === 'reduce' && y.chunk === x.chunk + 1),
            `r${x.chunk + 1} before b${x.chunk}`,
          );
        const ahead = before.filter((y) => y.stage === 'reduce').length - x.chunk;
        assert.ok(ahead <= 2, `${chunks} chunks: ${ahead} reduces ahead of b${x.chunk}`);
      });
    }
  });
});
