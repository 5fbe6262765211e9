import assert from 'node:assert/strict';
import { test } from 'node:test';
import { decideLease, type Observation } from '../../../operator/controller/leader-election.js';

const rec = (holderIdentity: string, leaseDurationSeconds = 15) => ({
  holderIdentity,
  leaseDurationSeconds,
  renewTime: 't',
  leaseTransitions: 0,
});

test('lease decisions follow the observed record and the local clock', () => {
  const rows: Array<[string, Observation | undefined, number, string]> = [
    ['no lease yet → create', undefined, 0, 'create'],
    ['we hold it → renew', { record: rec('me'), observedAtMs: 0 }, 100_000, 'renew'],
    ['another holder seen 5 s ago with a 15 s lease → wait', { record: rec('other'), observedAtMs: 0 }, 5_000, 'wait'],
    ['another holder not renewed for 15 s → acquire', { record: rec('other'), observedAtMs: 0 }, 15_000, 'acquire'],
    ['released lease (empty holder) → acquire at once', { record: rec(''), observedAtMs: 0 }, 1, 'acquire'],
  ];
  for (const [name, obs, now, want] of rows) assert.equal(decideLease(obs, 'me', now), want, name);
});
