import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { UsageError } from '../../../agent/api.js';
import {
  parseNnodes,
  parseNprocPerNode,
  parseRunArgs,
  parseStdSpec,
  runnerFor,
  splitRdzvConf,
} from '../../../agent/run-config.js';

const SCRIPT = new URL('../../fixtures/workers/env-dump.mjs', import.meta.url).pathname;

describe('tensile run flag parsing', () => {
  test('defaults follow torchrun', () => {
    const { options } = parseRunArgs([SCRIPT], {}, false);
    assert.ok(options);
    assert.deepEqual(options.nnodes, { min: 1, max: 1 });
    assert.equal(options.nprocPerNode, 1);
    assert.equal(options.maxRestarts, 0);
    assert.equal(options.role, 'default');
    assert.equal(options.rdzvBackend, 'embedded');
    assert.equal(options.rdzvId, 'none');
    assert.equal(options.shutdownGraceMs, 30_000);
    assert.equal(options.logFormat, 'json');
    assert.equal(options.runner, 'node');
    assert.equal(options.statusLine, false);
  });

  test('dash and underscore spellings, = values and short flags are the same flag', () => {
    const a = parseRunArgs(['--nproc-per-node', '3', '-r', '1', '-t3', SCRIPT], {}, false).options;
    const b = parseRunArgs(['--nproc_per_node=3', '--redirects=1', '--tee', '3', SCRIPT], {}, false).options;
    assert.equal(a?.nprocPerNode, 3);
    assert.deepEqual(a?.redirects, b?.redirects);
    assert.deepEqual(a?.tee, b?.tee);
    assert.equal(b?.nprocPerNode, 3);
  });

  test('everything after the script belongs to the script, flags included', () => {
    const { options } = parseRunArgs(
      ['--nproc-per-node', '2', SCRIPT, '--lr', '0.1', '--nproc-per-node', '9'],
      {},
      false,
    );
    assert.deepEqual(options?.scriptArgs, ['--lr', '0.1', '--nproc-per-node', '9']);
    assert.equal(options?.nprocPerNode, 2);
  });

  test('PET_ variables fill in absent flags and explicit flags win', () => {
    const env = { PET_NPROC_PER_NODE: '4', PET_MAX_RESTARTS: '2', PET_STANDALONE: '1' };
    const { options } = parseRunArgs(['--max-restarts', '1', SCRIPT], env, false);
    assert.equal(options?.nprocPerNode, 4);
    assert.equal(options?.maxRestarts, 1);
    assert.equal(options?.standalone, true);
    assert.match(String(options?.rdzvId), /^[0-9a-f-]{36}$/, '--standalone picks a random rdzv id');
  });

  test('the runner is chosen by extension, -m and --no-python', () => {
    const table: Array<[string, { module: boolean; noPython: boolean }, string]> = [
      ['train.py', { module: false, noPython: false }, 'python'],
      ['train.js', { module: false, noPython: false }, 'node'],
      ['train.mjs', { module: false, noPython: false }, 'node'],
      ['train.cjs', { module: false, noPython: false }, 'node'],
      ['train.ts', { module: false, noPython: false }, 'node-ts'],
      ['train.mts', { module: false, noPython: false }, 'node-ts'],
      ['train.sh', { module: false, noPython: false }, 'exec'],
      ['train.py', { module: false, noPython: true }, 'exec'],
      ['pkg.train', { module: true, noPython: false }, 'python-module'],
    ];
    for (const [script, flags, runner] of table) assert.equal(runnerFor(script, flags), runner, script);
  });

  test('--nnodes takes N or MIN:MAX and rejects the rest with the value and the bound', () => {
    assert.deepEqual(parseNnodes('2'), { min: 2, max: 2 });
    assert.deepEqual(parseNnodes('1:4'), { min: 1, max: 4 });
    assert.throws(() => parseNnodes('4:2'), /--nnodes '4:2': min \(4\) must be ≤ max \(2\)/);
    assert.throws(() => parseNnodes('0:2'), /min \(0\) must be ≥ 1/);
    assert.throws(() => parseNnodes('a:b'), /expected N or MIN:MAX/);
  });

  test('--nproc-per-node accepts integers, cpu and auto', () => {
    assert.equal(parseNprocPerNode('8'), 8);
    assert.ok(parseNprocPerNode('cpu') >= 1);
    assert.ok(parseNprocPerNode('auto') >= 1);
    assert.throws(() => parseNprocPerNode('0'), UsageError);
    assert.throws(() => parseNprocPerNode('-1'), /expected a positive integer/);
  });

  test('std specs are a mask or a per-rank map', () => {
    assert.deepEqual(parseStdSpec('3', '-r'), { all: 3, perRank: {} });
    assert.deepEqual(parseStdSpec('0:1,12:2', '-r'), { all: 0, perRank: { 0: 1, 12: 2 } });
    assert.throws(() => parseStdSpec('4', '-r'), /-r '4': expected 0-3/);
    assert.throws(() => parseStdSpec('0:1,', '-r'), UsageError);
  });

  test('--rdzv-conf is split into keys and values, both non-empty', () => {
    assert.deepEqual(splitRdzvConf('join_timeout=5, last_call_timeout=1'), {
      join_timeout: '5',
      last_call_timeout: '1',
    });
    assert.deepEqual(splitRdzvConf(''), {});
    assert.throws(() => splitRdzvConf('a=1,=2'), /'=2' must be key=value/);
    assert.throws(() => splitRdzvConf('a='), /'a=' must be key=value/);
  });

  test('multi-node settings need the etcd backend and an endpoint', () => {
    const { options } = parseRunArgs(
      ['--nnodes', '2:4', '--rdzv-endpoint', '127.0.0.1:2379', '--rdzv-id', 'job1', SCRIPT],
      {},
      false,
    );
    assert.equal(options?.rdzvBackend, 'etcd');
    assert.throws(
      () => parseRunArgs(['--nnodes', '2', '--rdzv-backend', 'embedded', SCRIPT], {}, false),
      /embedded is single-node/,
    );
    assert.throws(
      () => parseRunArgs(['--standalone', '--nnodes', '2', SCRIPT], {}, false),
      /standalone runs exactly one node/,
    );
    assert.throws(
      () => parseRunArgs(['--rdzv-backend', 'zookeeper', SCRIPT], {}, false),
      /'zookeeper': expected 'etcd'/,
    );
  });

  test('--local-ranks-filter must name existing local ranks', () => {
    assert.deepEqual(
      parseRunArgs(['--nproc-per-node', '4', '--local-ranks-filter', '0,3', SCRIPT], {}, false).options
        ?.localRanksFilter,
      [0, 3],
    );
    assert.throws(
      () => parseRunArgs(['--nproc-per-node', '2', '--local-ranks-filter', '5', SCRIPT], {}, false),
      /expected an integer from 0 to 1/,
    );
  });

  test('--help asks for help and nothing else is validated', () => {
    assert.equal(parseRunArgs(['--help'], {}, false).help, true);
  });

  test('--recovery is live by default, restart on request (flag or PET_RECOVERY), anything else is named', () => {
    const opts = (argv: string[], env: Record<string, string> = {}) =>
      parseRunArgs([...argv, SCRIPT], env, false).options;
    assert.equal(opts([])?.recovery, 'live');
    assert.equal(opts(['--recovery', 'restart'])?.recovery, 'restart');
    assert.equal(opts([], { PET_RECOVERY: 'restart' })?.recovery, 'restart');
    assert.equal(opts(['--recovery', 'live'], { PET_RECOVERY: 'restart' })?.recovery, 'live');
    assert.throws(() => opts(['--recovery', 'sometimes']), /--recovery 'sometimes': expected 'live' or 'restart'/);
  });

  test('--hang-timeout takes positive seconds (default: derived from the step time)', () => {
    const opts = (argv: string[], env: Record<string, string> = {}) =>
      parseRunArgs([...argv, SCRIPT], env, false).options;
    assert.equal(opts([])?.hangTimeoutMs, null);
    assert.equal(opts(['--hang-timeout', '2.5'])?.hangTimeoutMs, 2500);
    assert.equal(opts([], { PET_HANG_TIMEOUT: '30' })?.hangTimeoutMs, 30_000);
    assert.throws(() => opts(['--hang-timeout', '0']), /--hang-timeout '0': expected a positive number of seconds/);
    assert.throws(() => opts(['--hang-timeout', 'soon']), /--hang-timeout 'soon': expected a number of seconds/);
  });
});
