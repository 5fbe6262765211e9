import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { JobStatus, RendezvousHandler } from '../../../rendezvous/api.js';
import { createRendezvousHandler, parseRdzvConf } from '../../../rendezvous/index.js';
import { getJobStatus, watchJobStatus } from '../../../rendezvous/status.js';
import { useEtcd } from '../../helpers/etcd.js';
import { within } from './contract.js';

describe('job status from etcd', () => {
  const suite = useEtcd();

  const make = async (runId: string, label: string): Promise<RendezvousHandler> => {
    const { config, backendOptions } = parseRdzvConf(
      { last_call_timeout: '0.2', scale_up: 'deferred' },
      { runId, minNodes: 2, maxNodes: 3, endpoint: suite.etcd.endpoint },
    );
    const self = {
      nodeId: `${label}-id`,
      host: `host-${label}`,
      addr: '127.0.0.1',
      masterPort: 29_400,
      localWorldSize: 2,
    };
    const h = await createRendezvousHandler('etcd', { config, backendOptions, self });
    suite.open.push(h);
    return h;
  };

  test('an unknown job reads as unknown with no members', async () => {
    const s = await getJobStatus({ endpoint: suite.etcd.endpoint, runId: 'nobody' });
    assert.deepEqual(s, {
      runId: 'nobody',
      round: null,
      state: 'unknown',
      members: [],
      waiting: [],
      failureRestarts: 0,
    });
  });

  test('a running job shows its round, members with ranks and hosts, waiting nodes and restarts, live', async () => {
    const a = await make('st1', 'a');
    const b = await make('st1', 'b');
    await within(Promise.all([a.next(), b.next()]), 15_000, 'round 0');
    const s = await getJobStatus({ endpoint: suite.etcd.endpoint, runId: 'st1' });
    assert.equal(s.state, 'running');
    assert.equal(s.round, 0);
    assert.deepEqual(
      s.members.map((m) => m.groupRank),
      [0, 1],
    );
    assert.deepEqual(s.members.map((m) => m.host).sort(), ['host-a', 'host-b']);
    assert.deepEqual([s.minNodes, s.maxNodes, s.failureRestarts, s.waiting.length], [2, 3, 0, 0]);

    const ac = new AbortController();
    const seen: JobStatus[] = [];
    let wake: (() => void) | null = null;
    const watching = watchJobStatus({ endpoint: suite.etcd.endpoint, runId: 'st1', signal: ac.signal }, (st) => {
      seen.push(st);
      wake?.();
    });
    const until = (pred: (st: JobStatus) => boolean, what: string): Promise<void> =>
      within(
        new Promise<void>((resolve) => {
          const check = (): void => {
            if (seen.some(pred)) resolve();
          };
          wake = check;
          check();
        }),
        15_000,
        what,
      );
    try {
      await until((st) => st.state === 'running' && st.members.length === 2, 'first status');
      const c = await make('st1', 'c');
      const cRound = c.next(); // deferred scale-up: c waits until the next round
      await until((st) => st.waiting.some((w) => w.host === 'host-c'), 'waiting node c');
      await a.endRound({ reason: 'failure' });
      await within(Promise.all([a.next(), b.next(), cRound]), 15_000, 'round 1');
      await until(
        (st) => st.round === 1 && st.state === 'running' && st.members.length === 3 && st.failureRestarts === 1,
        'round 1 status',
      );
    } finally {
      ac.abort();
      await within(watching, 15_000, 'watch ends on abort');
    }
  });
});
