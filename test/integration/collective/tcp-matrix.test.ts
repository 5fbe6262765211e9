import { describe, it } from 'node:test';
import { runMatrix } from './run-matrix.js';

// The contract suite on the JS data plane (TENSILE_COLLECTIVE_TRANSPORT=js): one set of worker processes per world
// size runs every op × dtype × reduction × size (0, 1, odd, ~1 MB), in place and out of place, and checks each result
// against reference.ts. Worlds 3 and 5 use small ring segments so the pipelined ring runs many segments. Worlds 2
// and 3 use TCP between all ranks, the others Unix domain sockets. Worlds 6 and 7 run on the native plane only
// (shm-matrix.test.ts): they take no JS code path that 5 and 8 do not (2 cores in CI).
const js = { TENSILE_COLLECTIVE_TRANSPORT: 'js', TEST_DATA_PLANE: 'js' };
const worlds: { n: number; env: Record<string, string> }[] = [
  { n: 1, env: js },
  { n: 2, env: { ...js, TENSILE_TCP_UDS: '0' } },
  { n: 3, env: { ...js, TENSILE_TCP_SEGMENT_BYTES: '16384', TENSILE_TCP_PIPELINE_DEPTH: '3', TENSILE_TCP_UDS: '0' } },
  { n: 4, env: js },
  { n: 5, env: { ...js, TENSILE_TCP_SEGMENT_BYTES: '8192', TENSILE_TCP_SMALL_BYTES: '0' } },
  { n: 8, env: js },
];

describe('tcp backend collectives on the JS data plane against a reference', () => {
  for (const { n, env } of worlds) {
    it(`every op, dtype, reduction and size gives the reference result with ${n} rank(s)`, (t) => runMatrix(t, n, env));
  }
});
