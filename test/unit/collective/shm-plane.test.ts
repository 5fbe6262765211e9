import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CollectiveError } from '../../../collective/api.js';
import { resolveWorkerConfig } from '../../../collective/index.js';
import { decideShm, defaultShmTuning, transportFromEnv, type ShmVote } from '../../../collective/shm-plane.js';

const env = { RANK: '0', WORLD_SIZE: '2', MASTER_ADDR: '127.0.0.1', MASTER_PORT: '29500' };
const vote = (hostId: string, veto = '', forced = false): ShmVote => ({ hostId, veto, forced });

describe('choosing the data plane', () => {
  const table: { name: string; votes: ShmVote[]; want: ReturnType<typeof decideShm> }[] = [
    { name: 'all ranks on one host, none vetoes', votes: [vote('h/1'), vote('h/1'), vote('h/1')], want: { use: true } },
    {
      name: 'two hosts',
      votes: [vote('a/1'), vote('a/1'), vote('b/2')],
      want: { use: false, reason: 'the ranks run on 2 hosts' },
    },
    {
      name: 'one rank without the addon moves everyone to js, naming it',
      votes: [vote('h/1'), vote('h/1', 'addon missing')],
      want: { use: false, reason: 'rank 1: addon missing' },
    },
    {
      name: 'every veto is listed',
      votes: [vote('h/1', 'TENSILE_COLLECTIVE_TRANSPORT=js'), vote('h/1', 'addon missing')],
      want: { use: false, reason: 'rank 0: TENSILE_COLLECTIVE_TRANSPORT=js; rank 1: addon missing' },
    },
  ];
  for (const row of table) it(row.name, () => assert.deepEqual(decideShm(row.votes), row.want));

  it('reads TENSILE_COLLECTIVE_TRANSPORT and rejects anything but js or native, quoting it', () => {
    assert.equal(transportFromEnv({}), undefined);
    assert.equal(transportFromEnv({ TENSILE_COLLECTIVE_TRANSPORT: '' }), undefined);
    assert.equal(transportFromEnv({ TENSILE_COLLECTIVE_TRANSPORT: 'js' }), 'js');
    assert.equal(transportFromEnv({ TENSILE_COLLECTIVE_TRANSPORT: 'native' }), 'native');
    assert.throws(
      () => resolveWorkerConfig({}, { ...env, TENSILE_COLLECTIVE_TRANSPORT: 'shm' }),
      (e: unknown) =>
        e instanceof CollectiveError &&
        e.code === 'INVALID_ARGUMENT' &&
        e.message === `TENSILE_COLLECTIVE_TRANSPORT="shm": expected 'js' or 'native'`,
    );
  });

  it('parses the shared-memory tuning variables with their bounds', () => {
    const c = resolveWorkerConfig(
      {},
      { ...env, TENSILE_SHM_SLOT_BYTES: '65536', TENSILE_SHM_SMALL_BYTES: '0', TENSILE_SHM_SPIN: '10' },
    );
    assert.deepEqual(c.shmTuning, { slotBytes: 65536, smallBytes: 0, spin: 10 });
    assert.equal(c.transport, undefined);
    assert.throws(
      () => resolveWorkerConfig({}, { ...env, TENSILE_SHM_SLOT_BYTES: '100' }),
      /TENSILE_SHM_SLOT_BYTES="100": expected an integer in \[4096, 1073741824\]/,
    );
  });

  it('sleeps at once by default (spinning cost a loaded 2-core machine 4.5× on 4 KB)', () => {
    assert.deepEqual(defaultShmTuning(), { slotBytes: 2 << 20, smallBytes: 64 << 10, spin: 0 });
  });
});
