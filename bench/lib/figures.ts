// Shared bits of the side-by-side benchmarks: the figure line format, medians, a throwaway etcd, waits.
import { fileURLToPath } from 'node:url';
import { startEtcd, type EtcdServer } from '../../test/helpers/etcd.js';

/** The repository root, and the built CLI the benchmarks launch (`npm run build` first). */
export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const CLI = `${ROOT}dist/agent/cli.js`;

/** `--repeats N` from the command line (default 3); anything but a positive integer is an error naming it. */
export function repeatsFromArgv(fallback = 3, argv: readonly string[] = process.argv): number {
  const i = argv.indexOf('--repeats');
  if (i < 0) return fallback;
  const v = argv[i + 1];
  const n = Number(v);
  if (v === undefined || !Number.isInteger(n) || n < 1) {
    throw new Error(`--repeats ${v === undefined ? '(missing)' : JSON.stringify(v)}: expected a positive integer`);
  }
  return n;
}

// The figure line (DESIGN §8), one per figure, one shape for every benchmark:
//   figure=<name> tensile=<v> peer=<v> unit=<u> ratio=<tensile/peer> target=<op><v> met=<yes|no>
// Two words stand in for a number, and nothing else does: "-" where the field does not apply, "failed" where a
// value should have been measured and could not be.
//   - side by side (`figure`): the target is on the ratio. A peer that could not run: peer=failed ratio=- met=no
//     (a target that cannot be checked is not met).
//   - no peer exists (`absoluteFigure`): peer=- ratio=-, and the target is on the tensile value itself, in `unit`;
//     a figure reported for information only has target=- met=-.
//   - a tensile value that could not be measured (not finite): tensile=failed met=no.
// bench/lib/results.mjs reads these lines back (bench/results/*.txt) for the README's table.

export type TargetOp = '<=' | '>=';

/** The one line for a figure; pure (tests check it), `figure`/`absoluteFigure` print it. */
export function formatFigure(f: {
  name: string;
  tensile: number;
  /** Side by side: the peer's value; undefined or not finite: the peer could not run (met=no). */
  peer?: number;
  unit: string;
  /** 'ratio': the target is on tensile/peer; 'absolute': on the tensile value. */
  on: 'ratio' | 'absolute';
  target?: { op: TargetOp; value: number };
  digits?: number;
}): string {
  if (!/^[A-Za-z0-9_.:-]+$/.test(f.name))
    throw new Error(`figure name ${JSON.stringify(f.name)} must match [A-Za-z0-9_.:-]+`);
  if (!/^\S+$/.test(f.unit)) throw new Error(`figure ${f.name}: unit ${JSON.stringify(f.unit)} must be one word`);
  const num = (x: number | undefined, digits = f.digits): string => {
    if (x === undefined || !Number.isFinite(x)) return 'failed';
    if (digits !== undefined) return x.toFixed(digits);
    const a = Math.abs(x);
    return x.toFixed(a >= 1000 ? 0 : a >= 100 ? 1 : 3);
  };
  const sideBySide = f.on === 'ratio';
  const peerOk = sideBySide && f.peer !== undefined && Number.isFinite(f.peer) && f.peer !== 0;
  const tensileOk = Number.isFinite(f.tensile);
  // Equal values are a ratio of 1, zeros included (e.g. 0 steps lost on both sides).
  const ratio = peerOk && tensileOk ? (f.tensile === f.peer ? 1 : f.tensile / f.peer!) : undefined;
  const checked = sideBySide ? ratio : tensileOk ? f.tensile : undefined;
  let met: string;
  if (!f.target) met = '-';
  else if (checked === undefined) met = 'no';
  else met = (f.target.op === '<=' ? checked <= f.target.value : checked >= f.target.value) ? 'yes' : 'no';
  const target = f.target ? `${f.target.op}${f.target.value}` : '-';
  const peer = sideBySide ? num(f.peer) : '-';
  return (
    `figure=${f.name} tensile=${num(f.tensile)} peer=${peer} unit=${f.unit} ` +
    `ratio=${ratio === undefined ? '-' : ratio.toFixed(3)} target=${target} met=${met}`
  );
}

/**
 * Prints a side-by-side figure: target `op target` on tensile/peer. `peer` undefined (the peer could not run here)
 * prints peer=failed ratio=- met=no. `digits` fixes the decimals of both values (default: by magnitude).
 */
export function figure(
  name: string,
  tensile: number,
  peer: number | undefined,
  unit: string,
  op: TargetOp,
  target: number,
  digits?: number,
): void {
  console.log(formatFigure({ name, tensile, peer, unit, on: 'ratio', target: { op, value: target }, digits }));
}

/** Prints a figure no peer can be run for: target on the value itself (in `unit`), or none (information only). */
export function absoluteFigure(
  name: string,
  tensile: number,
  unit: string,
  target?: { op: TargetOp; value: number },
  digits?: number,
): void {
  console.log(formatFigure({ name, tensile, unit, on: 'absolute', target, digits }));
}

export const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] as number;
};

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export { freePort } from '../../common/free-port.js';

export async function until(check: () => boolean, what: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
  }
}

export type BenchEtcd = Pick<EtcdServer, 'endpoint' | 'stop'>;

/** Debian's etcd on free loopback ports (the tests' harness); `--enable-v2` for torchrun's etcd-v2 backend. */
export function startBenchEtcd(enableV2: boolean): Promise<BenchEtcd> {
  return startEtcd({ extraArgs: enableV2 ? ['--enable-v2'] : [] });
}

/** Kills a process and, when it leads one, its process group. */
export function killHard(pid: number): void {
  for (const target of [-pid, pid]) {
    try {
      process.kill(target, 'SIGKILL');
    } catch {
      // not a group leader, or gone
    }
  }
}
