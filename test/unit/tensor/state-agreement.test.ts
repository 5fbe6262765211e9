// The live-recovery state agreement policy: who sends the state of a new round to whom. Table-driven, pure.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { planStateAgreement, type AgreementPlan, type StateClaim } from '../../../tensor/state-transfer.js';

const none: StateClaim = { hasState: false, step: 0, fingerprint: 0 };
const at = (step: number, fingerprint = 1000 + step): StateClaim => ({ hasState: true, step, fingerprint });

const cases: [string, StateClaim[], AgreementPlan][] = [
  ['nobody holds state (a job start, or every worker lost): disk', [none, none, none], { kind: 'disk' }],
  ['a world of one without state: disk', [none], { kind: 'disk' }],
  ['everyone holds the same state: keep', [at(60), at(60), at(60)], { kind: 'keep', step: 60 }],
  [
    'a replaced worker gets the state from the lowest rank at the highest step',
    [at(60), none, at(60)],
    { kind: 'peer', source: 0, step: 60, receivers: [1], divergent: [] },
  ],
  [
    'a replaced rank 0 gets it from rank 1',
    [none, at(60), at(60)],
    { kind: 'peer', source: 1, step: 60, receivers: [0], divergent: [] },
  ],
  [
    'a rank that completed the interrupted step is the source; the ranks behind it receive',
    [at(60), at(61), none],
    { kind: 'peer', source: 1, step: 61, receivers: [0, 2], divergent: [] },
  ],
  [
    'ties on the highest step go to the lowest rank',
    [at(59), at(61), at(61), at(61)],
    { kind: 'peer', source: 1, step: 61, receivers: [0], divergent: [] },
  ],
  [
    'a rank at the same step holding a different state receives it too (divergent)',
    [at(60, 7), at(60, 7), at(60, 8)],
    { kind: 'peer', source: 0, step: 60, receivers: [2], divergent: [2] },
  ],
  [
    'a step-0 holder still beats nobody',
    [none, at(0)],
    { kind: 'peer', source: 1, step: 0, receivers: [0], divergent: [] },
  ],
];

describe('planStateAgreement', () => {
  for (const [name, claims, expected] of cases) {
    it(name, () => assert.deepEqual(planStateAgreement(claims), expected));
  }
});
