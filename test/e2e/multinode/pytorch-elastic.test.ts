// Two agents run an unmodified gloo allreduce script; killing one node makes the survivor restart its worker with
// the smaller world, and the script goes on from its last checkpointed step.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { REPO_ROOT, waitFor, type TensileProcess } from '../../helpers/cli.js';
import { cleanupAgents, startAgent } from '../../helpers/elastic.js';
import { startEtcd, type EtcdServer } from '../../helpers/etcd.js';

const PYTHON = '/usr/bin/python3';
const hasTorch =
  existsSync(PYTHON) &&
  spawnSync(PYTHON, ['-c', 'import torch.distributed as d; assert d.is_gloo_available()']).status === 0;
let etcd: EtcdServer | null = null;
const agents: TensileProcess[] = [];
const dir = mkdtempSync(join(tmpdir(), 'tensile-pt-elastic-'));
after(async () => {
  await cleanupAgents(agents, []);
  await etcd?.stop();
  rmSync(dir, { recursive: true, force: true });
});

test(
  'a gloo job survives the loss of one of its two nodes and resumes at world size 1',
  { skip: hasTorch ? false : `PyTorch with gloo is not importable from ${PYTHON}` },
  async () => {
    etcd = await startEtcd();
    const stepFile = join(dir, 'step');
    for (let i = 0; i < 2; i++) {
      agents.push(
        startAgent({
          endpoint: etcd.endpoint,
          runId: 'pt-elastic',
          out: dir,
          nnodes: '1:2',
          script: join(REPO_ROOT, 'examples/pytorch/elastic_allreduce.py'),
          scriptArgs: ['--steps', '150', '--step-file', stepFile, '--sleep', '0.03'],
          env: { PYTHON_EXEC: PYTHON },
          timeoutMs: 150_000,
        }),
      );
    }
    await waitFor(() => agents.some((a) => /step 20 world 2/.test(a.stdout())), 'twenty steps at world size 2', 90_000);
    const idx = agents.findIndex((a) => a.stderr().includes('"groupRank":1'));
    assert.ok(idx >= 0);
    const [victim] = agents.splice(idx, 1) as [TensileProcess];
    victim.child.kill('SIGKILL');
    await victim.result;
    const survivor = agents[0]!;
    const res = await survivor.result;
    assert.equal(res.code, 0, res.stderr.slice(-3000));
    const resumed = /start rank 0 world 1 from step (\d+)/.exec(res.stdout);
    assert.ok(resumed, `the survivor restarted its worker at world size 1:\n${res.stdout.slice(-2000)}`);
    assert.ok(Number(resumed[1]) >= 20, `resumed from the checkpoint (step ${resumed[1]})`);
    assert.match(res.stdout, /done rank 0 world 1 at step 150/);
    assert.equal(readFileSync(stepFile, 'utf8'), '150');
    assert.match(res.stderr, /restarting them in the next round|round ended by the rendezvous/);
    assert.match(res.stderr, /member-lost/, 'the loss was treated as a membership change, not a failure');
  },
);
