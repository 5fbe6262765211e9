import { describe, it } from 'node:test';
import { runMatrix } from './run-matrix.js';

// The contract suite on the native socket plane (TENSILE_COLLECTIVE_TRANSPORT=native), world sizes 2 to 8, with
// hosts simulated on loopback by TENSILE_HOST_ID. `hosts` gives each rank's host. A host with several ranks makes
// allreduce hierarchical (shm → sockets between host leaders → shm) unless TENSILE_NET_HIERARCHY=0. Tunings vary
// per world so that both algorithms run: smallBytes 0 sends everything through the ring (8 KiB segments: ~1 MB
// buffers are reduced in many pieces and broadcast in many segments; every allreduce of a hierarchical world is
// hierarchical), 1 GiB everything through recursive doubling (barriers and buffers shorter than the world always
// take it; non-powers of two fold their extra ranks in and out). With the default 64 KiB, allreduces up to 64 KiB
// take doubling on the flat group and larger ones the hierarchical path. Hierarchical worlds 3 and 6 cut ~1 MB
// buffers into many pipelined chunks (TENSILE_NET_CHUNK_BYTES; 100000 bytes is not a whole number of float64s; in
// world 3 each 64 KiB chunk crosses between the hosts by recursive doubling). Every worker checks plane and layout.
const net = { TENSILE_COLLECTIVE_TRANSPORT: 'native', TEST_DATA_PLANE: 'net' };
const ring = { TENSILE_NET_SMALL_BYTES: '0', TENSILE_NET_SEGMENT_BYTES: '8192' };
const doubling = { TENSILE_NET_SMALL_BYTES: String(1 << 30) };
const worlds: { hosts: string; env: Record<string, string> }[] = [
  { hosts: 'ab', env: { ...net, TEST_NET_LAYOUT: 'flat' } },
  { hosts: 'abc', env: { ...net, ...ring, TEST_NET_LAYOUT: 'flat' } },
  { hosts: 'aab', env: { ...net, TENSILE_NET_CHUNK_BYTES: '65536', TEST_NET_LAYOUT: 'hierarchical' } },
  { hosts: 'aabb', env: { ...net, TEST_NET_LAYOUT: 'hierarchical' } },
  { hosts: 'aabb', env: { ...net, ...ring, TENSILE_NET_HIERARCHY: '0', TEST_NET_LAYOUT: 'flat' } },
  { hosts: 'abcde', env: { ...net, ...doubling, TEST_NET_LAYOUT: 'flat' } },
  {
    hosts: 'aabbcc',
    env: {
      ...net,
      ...ring,
      TENSILE_SHM_SLOT_BYTES: '8192',
      TENSILE_NET_CHUNK_BYTES: '100000',
      TEST_NET_LAYOUT: 'hierarchical',
    },
  },
  { hosts: 'abcdefg', env: { ...net, TEST_NET_LAYOUT: 'flat' } },
  { hosts: 'aaaabbbb', env: { ...net, TEST_NET_LAYOUT: 'hierarchical' } },
];

// TEST_WORLDS=2,4 runs only those world sizes (scripts/native-sanitize.sh uses it).
const only = process.env.TEST_WORLDS?.split(',').map(Number);

describe('tcp backend collectives on the native socket plane against a reference', () => {
  for (const { hosts, env } of worlds.filter((w) => !only || only.includes(w.hosts.length))) {
    const n = hosts.length;
    const layout = env.TEST_NET_LAYOUT;
    it(`every op, dtype, reduction and size gives the reference result with ${n} ranks on hosts ${hosts.split('').join(',')} (${layout})`, (t) =>
      runMatrix(t, n, env, (rank) => ({ TENSILE_HOST_ID: hosts[rank]! })));
  }
});
