// The node-agent command lines bench/node-loss and bench/rendezvous start (bench/lib/elastic-launch.ts), flag by flag.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { tensileAgentCommand, torchrunAgentCommand } from '../../../bench/lib/elastic-launch.js';
import { CLI } from '../../../bench/lib/figures.js';

const W = 'worker.py';
const nodeLoss = { nnodes: '1:2', nprocPerNode: 1, maxRestarts: 3, endpoint: '127.0.0.1:2379', runId: 'r', script: W };
const rendezvous = {
  nnodes: '2:3',
  nprocPerNode: 2,
  endpoint: '127.0.0.1:2379',
  runId: 'r',
  rdzvConf: 'last_call_timeout=1',
  script: W,
};

test('tensile: etcd rendezvous on loopback; --max-restarts and --rdzv-conf only when given', () => {
  assert.deepEqual(tensileAgentCommand(nodeLoss), [
    process.execPath,
    [CLI, 'run', '--nnodes', '1:2', '--nproc-per-node', '1', '--max-restarts', '3', '--rdzv-backend', 'etcd']
      .concat(['--rdzv-endpoint', '127.0.0.1:2379', '--rdzv-id', 'r', '--local-addr', '127.0.0.1'])
      .concat(['--log-level', 'warn', W]),
  ]);
  assert.deepEqual(tensileAgentCommand(rendezvous)[1], [
    ...[CLI, 'run', '--nnodes', '2:3', '--nproc-per-node', '2', '--rdzv-backend', 'etcd'],
    ...['--rdzv-endpoint', '127.0.0.1:2379', '--rdzv-id', 'r', '--rdzv-conf', 'last_call_timeout=1'],
    ...['--local-addr', '127.0.0.1', '--log-level', 'warn', W],
  ]);
});

test('torchrun: the given backend, torchrun spelling, 0.1 s monitor interval, output redirected and tee-d', () => {
  assert.deepEqual(torchrunAgentCommand(nodeLoss, 'etcd-v2'), [
    '/usr/bin/torchrun',
    [
      ...['--nnodes', '1:2', '--nproc_per_node', '1', '--max_restarts', '3', '--rdzv_backend', 'etcd-v2'],
      ...['--rdzv_endpoint', '127.0.0.1:2379', '--rdzv_id', 'r', '--monitor_interval', '0.1', '-r', '1', '-t', '1', W],
    ],
  ]);
  assert.deepEqual(torchrunAgentCommand(rendezvous, 'c10d')[1], [
    ...['--nnodes', '2:3', '--nproc_per_node', '2', '--rdzv_backend', 'c10d', '--rdzv_endpoint', '127.0.0.1:2379'],
    ...['--rdzv_id', 'r', '--rdzv_conf', 'last_call_timeout=1', '--monitor_interval', '0.1', '-r', '1', '-t', '1', W],
  ]);
});
