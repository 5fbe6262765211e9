import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RDZV_DEFAULTS, RendezvousConfigError, parseRdzvConf, redactConf } from '../../../rendezvous/index.js';

const base = { runId: 'job1', minNodes: 1, maxNodes: 2 };

test('empty conf yields the documented defaults', () => {
  const { config, backendOptions } = parseRdzvConf({}, base);
  assert.deepEqual(config, { runId: 'job1', minNodes: 1, maxNodes: 2, ...RDZV_DEFAULTS });
  assert.equal(config.joinTimeoutMs, 600_000);
  assert.equal(config.lastCallTimeoutMs, 1_000);
  assert.equal(config.leaseTtlMs, 2_000);
  assert.deepEqual(backendOptions.conf, {});
});

test('torchrun timeout keys are read as seconds, fractions allowed', () => {
  const cases: [string, string, keyof ReturnType<typeof parseRdzvConf>['config'], number][] = [
    ['join_timeout', '5', 'joinTimeoutMs', 5000],
    ['last_call_timeout', '0.5', 'lastCallTimeoutMs', 500],
    ['close_timeout', '7', 'closeTimeoutMs', 7000],
    ['read_timeout', '3', 'readTimeoutMs', 3000],
    ['heartbeat', '4', 'leaseTtlMs', 4000],
    ['heartbeat_timeout', '3', 'leaseTtlMs', 3000],
    ['lease_ttl', '1', 'leaseTtlMs', 1000],
    ['outage_timeout', '90', 'outageTimeoutMs', 90000],
  ];
  for (const [key, value, field, expected] of cases) {
    assert.equal(parseRdzvConf({ [key]: value }, base).config[field], expected, `${key}=${value}`);
  }
});

test('scale_up accepts immediate and deferred only', () => {
  assert.equal(parseRdzvConf({ scale_up: 'deferred' }, base).config.scaleUpPolicy, 'deferred');
  assert.throws(() => parseRdzvConf({ scale_up: 'later' }, base), /scale_up=later: expected "immediate" or "deferred"/);
});

test('bad values name the key, the value and the expectation', () => {
  assert.throws(
    () => parseRdzvConf({ join_timeout: 'ten' }, base),
    (err: unknown) =>
      err instanceof RendezvousConfigError &&
      err.code === 'INVALID_ARGUMENT' &&
      err.terminal &&
      /join_timeout=ten: expected a non-negative number of seconds/.test(err.message),
  );
  assert.throws(() => parseRdzvConf({ lease_ttl: '0.5' }, base), /lease_ttl=0.5: the lease TTL must be ≥ 1 second/);
  assert.throws(() => parseRdzvConf({ bogus: '1' }, base), /bogus=1: unknown key; expected one of/);
  assert.throws(() => parseRdzvConf({}, { ...base, minNodes: 4, maxNodes: 2 }), /min \(4\) must be ≤ max \(2\)/);
  assert.throws(() => parseRdzvConf({}, { ...base, runId: 'a/b' }), /rdzv id "a\/b": expected letters/);
});

test('etcd TLS and auth keys pass through to the backend and a plain password is refused without echoing it', () => {
  const { backendOptions } = parseRdzvConf(
    { cacert: '/ca.pem', cert: '/c.pem', key: '/k.pem', user: 'u', password_env: 'PW' },
    { ...base, endpoint: '127.0.0.1:2379' },
  );
  assert.deepEqual(backendOptions, {
    endpoint: '127.0.0.1:2379',
    conf: { cacert: '/ca.pem', cert: '/c.pem', key: '/k.pem', user: 'u', password_env: 'PW' },
  });
  assert.throws(
    () => parseRdzvConf({ user: 'u', password: 's3cret' }, base),
    (err: unknown) => err instanceof RendezvousConfigError && !err.message.includes('s3cret'),
  );
  assert.throws(() => parseRdzvConf({ cert: '/c.pem' }, base), /cert and key must be given together/);
  assert.throws(() => parseRdzvConf({ password_file: '/pw' }, base), /a password needs user=/);
  assert.deepEqual(redactConf({ user: 'u', password: 'x' }), { user: 'u', password: '<hidden>' });
});
