// bench/node-loss: 2 agents, --nnodes 1:2, one gloo worker each allreducing in a loop. SIGKILL one node (its agent
// and its workers); time until the survivor has completed an allreduce again at world size 1.
// tensile (etcd v3, default lease TTL) vs torchrun (etcd-v2 backend, --max-restarts 3), same worker, one run.
// Usage: npm run build && npm run bench -- node-loss [--repeats N]
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { tensileAgentCommand, torchrunAgentCommand } from '../lib/elastic-launch.js';
import { CLI, figure, killHard, median, sleep, startBenchEtcd, until, repeatsFromArgv, ROOT } from '../lib/figures.js';

const WORKER = join(ROOT, 'bench/node-loss/worker.py');
const REPEATS = repeatsFromArgv();

export type Peer = 'tensile' | 'torchrun';

function agentCommand(peer: Peer, endpoint: string, runId: string): [string, string[]] {
  const launch = { nnodes: '1:2', nprocPerNode: 1, maxRestarts: 3, endpoint, runId, script: WORKER };
  return peer === 'tensile' ? tensileAgentCommand(launch) : torchrunAgentCommand(launch, 'etcd-v2');
}

/** One node-loss run of `peer`: seconds from the SIGKILL to the survivor's first allreduce at world size 1. */
export async function nodeLossOnce(peer: Peer, i: number): Promise<number> {
  const etcd = await startBenchEtcd(peer === 'torchrun');
  const out = mkdtempSync(join(tmpdir(), 'bench-nodeloss-'));
  const children: ChildProcess[] = [];
  try {
    for (let n = 0; n < 2; n++) {
      const [cmd, args] = agentCommand(peer, etcd.endpoint, `loss${i}`);
      children.push(
        spawn(cmd, args, {
          env: {
            ...process.env,
            BENCH_OUT: out,
            PYTHON_EXEC: '/usr/bin/python3',
            OMP_NUM_THREADS: '1',
            LOGLEVEL: 'WARNING',
          },
          stdio: 'ignore',
          detached: true,
        }),
      );
    }
    await until(
      () => readdirSync(out).filter((f) => f.startsWith('trained-2-')).length >= 2,
      `${peer}: two workers training`,
      120_000,
    );
    await sleep(1000);
    // The victim: the node with group rank 1 (its agent is the worker's parent).
    const starts = readdirSync(out)
      .filter((f) => f.startsWith('start-'))
      .map((f) => ({ pid: Number(f.slice(6)), fields: readFileSync(join(out, f), 'utf8').split(' ') }));
    const victim = starts.find((s) => s.fields[0] === '1');
    if (!victim) throw new Error(`${peer}: no worker with group rank 1`);
    const agentPid = Number(victim.fields[1]);
    const killedAt = Date.now() / 1000;
    killHard(agentPid);
    killHard(victim.pid);
    await until(
      () => readdirSync(out).some((f) => f.startsWith('trained-1-')),
      `${peer}: survivor training at world size 1`,
      120_000,
    );
    const trained = Number(
      readFileSync(join(out, readdirSync(out).find((f) => f.startsWith('trained-1-')) as string), 'utf8'),
    );
    writeFileSync(join(out, 'stop'), '');
    return trained - killedAt;
  } finally {
    await sleep(300);
    for (const c of children) if (c.pid) killHard(c.pid);
    for (const f of readdirSync(out).filter((f) => f.startsWith('start-'))) killHard(Number(f.slice(6)));
    await etcd.stop();
    rmSync(out, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  if (!existsSync(CLI)) throw new Error(`run npm run build first (${CLI} is missing)`);
  const res: Record<Peer, number[]> = { tensile: [], torchrun: [] };
  for (let i = 0; i < REPEATS; i++) {
    for (const peer of ['torchrun', 'tensile'] as const) res[peer].push(await nodeLossOnce(peer, i));
  }
  figure('node_loss_to_training_again', median(res.tensile), median(res.torchrun), 's', '<=', 0.15);
}

// Run as a script (bench/live-recovery imports nodeLossOnce for its torchrun column).
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((err: Error) => {
    console.error(`bench/node-loss: ${err.message}`);
    process.exit(1);
  });
}
