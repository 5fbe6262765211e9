// bench/rendezvous: 2 agents × 2 workers, --nnodes 2:3, last_call_timeout=1: launch → all four workers running.
// tensile (etcd v3) vs torchrun with the etcd-v2 backend (etcd --enable-v2) and with c10d, in one run.
// Usage: npm run build && npm run bench -- rendezvous [--repeats N]
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { tensileAgentCommand, torchrunAgentCommand } from '../lib/elastic-launch.js';
import { CLI, figure, freePort, median, startBenchEtcd, until, repeatsFromArgv, ROOT } from '../lib/figures.js';

const WORKER = join(ROOT, 'bench/launch/worker.py');
const REPEATS = repeatsFromArgv();

type Peer = 'tensile' | 'torchrun-etcd-v2' | 'torchrun-c10d';

function agentCommand(peer: Peer, endpoint: string, runId: string): [string, string[]] {
  const launch = { nnodes: '2:3', nprocPerNode: 2, endpoint, runId, rdzvConf: 'last_call_timeout=1', script: WORKER };
  if (peer === 'tensile') return tensileAgentCommand(launch);
  return torchrunAgentCommand(launch, peer === 'torchrun-c10d' ? 'c10d' : 'etcd-v2');
}

async function once(peer: Peer, i: number): Promise<number> {
  const etcd = peer === 'torchrun-c10d' ? null : await startBenchEtcd(peer === 'torchrun-etcd-v2');
  const endpoint = etcd ? etcd.endpoint : `127.0.0.1:${await freePort()}`;
  const out = mkdtempSync(join(tmpdir(), 'bench-rdzv-'));
  const children: ChildProcess[] = [];
  try {
    const t0 = Date.now() / 1000;
    for (let n = 0; n < 2; n++) {
      const [cmd, args] = agentCommand(peer, endpoint, `bench${i}`);
      children.push(
        spawn(cmd, args, {
          env: {
            ...process.env,
            BENCH_OUT: out,
            BENCH_MODE: 'exit',
            PYTHON_EXEC: '/usr/bin/python3',
            OMP_NUM_THREADS: '1',
            LOGLEVEL: 'WARNING',
          },
          stdio: 'ignore',
        }),
      );
    }
    await until(
      () => readdirSync(out).filter((f) => f.startsWith('start-')).length >= 4,
      `${peer}: four workers`,
      90_000,
    );
    const last = Math.max(
      ...readdirSync(out)
        .filter((f) => f.startsWith('start-'))
        .map((f) => Number(readFileSync(join(out, f), 'utf8'))),
    );
    await Promise.all(children.map((c) => new Promise((r) => (c.exitCode !== null ? r(null) : c.once('close', r)))));
    return last - t0;
  } finally {
    for (const c of children) c.kill('SIGKILL');
    await etcd?.stop();
    rmSync(out, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  if (!existsSync(CLI)) throw new Error(`run npm run build first (${CLI} is missing)`);
  const res: Record<Peer, number[]> = { tensile: [], 'torchrun-etcd-v2': [], 'torchrun-c10d': [] };
  for (let i = 0; i < REPEATS; i++) {
    for (const peer of Object.keys(res) as Peer[]) res[peer].push(await once(peer, i));
  }
  figure('rendezvous_2x2_vs_etcd_v2', median(res.tensile), median(res['torchrun-etcd-v2']), 's', '<=', 0.5);
  figure('rendezvous_2x2_vs_c10d', median(res.tensile), median(res['torchrun-c10d']), 's', '<=', 0.5);
}

main().catch((err: Error) => {
  console.error(`bench/rendezvous: ${err.message}`);
  process.exit(1);
});
