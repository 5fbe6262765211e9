import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BadOptionsError } from '../../../operator/api.js';
import {
  OPERATOR_FLAGS,
  operatorOptionsShape,
  optionsFromFlags,
  parseOperatorOptions,
} from '../../../operator/config/operator-options.js';

test('every option of the schema has exactly one CLI flag, kebab-case, negated when it defaults to true', () => {
  assert.deepEqual(
    OPERATOR_FLAGS.map((f) => f.option),
    Object.keys(operatorOptionsShape),
  );
  const byOption = new Map(OPERATOR_FLAGS.map((f) => [f.option, f]));
  assert.deepEqual(byOption.get('leaseDurationMs'), {
    option: 'leaseDurationMs',
    flag: 'lease-duration-ms',
    kind: 'integer',
    description: 'How long a Lease holds without renewal',
    defaultValue: 15_000,
  });
  assert.equal(byOption.get('leaderElection')?.flag, 'no-leader-election');
  assert.equal(byOption.get('managedEtcd')?.flag, 'no-managed-etcd');
  assert.equal(byOption.get('watchNodes')?.flag, 'no-watch-nodes');
  assert.equal(byOption.get('kubeconfig')?.kind, 'string');
});

test('CLI values become options: negated booleans, integers, strings; absent flags keep the schema defaults', () => {
  const input = optionsFromFlags({
    'no-leader-election': true,
    workers: '8',
    'lease-name': 'l',
    'metrics-port': '0',
  });
  assert.deepEqual(input, { leaderElection: false, workers: 8, leaseName: 'l', metricsPort: 0 });
  const o = parseOperatorOptions(input);
  assert.equal(o.managedEtcd, true);
  assert.equal(o.leaseDurationMs, 15_000);
  assert.equal(o.metricsHost, '0.0.0.0');
});

test('a flag that is not an integer is rejected naming the flag and the text given', () => {
  assert.throws(
    () => optionsFromFlags({ workers: 'four' }),
    (e: unknown) =>
      e instanceof BadOptionsError && e.message === 'tensile operator: --workers four: expected an integer',
  );
  assert.throws(() => optionsFromFlags({ 'metrics-port': '' }), /--metrics-port : expected an integer/);
});

test('out-of-range options name the flag, the value and the bound', () => {
  assert.throws(
    () => parseOperatorOptions({ workers: 100 }),
    (e: unknown) =>
      e instanceof BadOptionsError &&
      e.code === 'INVALID_ARGUMENT' &&
      e.message === 'tensile operator: --workers 100: Too big: expected number to be <=64',
  );
  assert.throws(
    () => parseOperatorOptions({ leaseDurationMs: 2000, renewDeadlineMs: 3000 }),
    /--renew-deadline-ms 3000: must be < leaseDurationMs \(2000\)/,
  );
  assert.throws(() => parseOperatorOptions({ workerz: 1 } as never), /Unrecognized key/);
});
