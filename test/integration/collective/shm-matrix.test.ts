import { describe, it } from 'node:test';
import { runMatrix } from './run-matrix.js';

// The contract suite on the native shared-memory plane (TENSILE_COLLECTIVE_TRANSPORT=native), world sizes 2 to 8.
// Worlds 3 and 5 use 8 KiB slots, so that ~1 MB buffers run as many steps (and reduceScatter pieces are split);
// world 4 sends everything through the whole-buffer small path, world 6 everything through the sliced path; worlds
// 2 and 7 spin before sleeping, the others sleep at once. Every worker checks that the plane really is 'shm'.
const shm = { TENSILE_COLLECTIVE_TRANSPORT: 'native', TEST_DATA_PLANE: 'shm' };
const worlds: { n: number; env: Record<string, string> }[] = [
  { n: 2, env: { ...shm, TENSILE_SHM_SPIN: '5000' } },
  { n: 3, env: { ...shm, TENSILE_SHM_SLOT_BYTES: '8192' } },
  { n: 4, env: { ...shm, TENSILE_SHM_SMALL_BYTES: String(1 << 30), TENSILE_SHM_SLOT_BYTES: String(4 << 20) } },
  { n: 5, env: { ...shm, TENSILE_SHM_SLOT_BYTES: '8192', TENSILE_SHM_SPIN: '0' } },
  { n: 6, env: { ...shm, TENSILE_SHM_SMALL_BYTES: '0' } },
  { n: 7, env: { ...shm, TENSILE_SHM_SPIN: '1000' } },
  { n: 8, env: shm },
];

// TEST_WORLDS=3,6 runs only those worlds (scripts/native-sanitize.sh uses it).
const only = process.env.TEST_WORLDS?.split(',').map(Number);

describe('tcp backend collectives on the native shared-memory plane against a reference', () => {
  for (const { n, env } of worlds.filter((w) => !only || only.includes(w.n))) {
    it(`every op, dtype, reduction and size gives the reference result with ${n} ranks`, (t) => runMatrix(t, n, env));
  }
});
