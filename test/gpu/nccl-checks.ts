// NCCL-only correctness checks, beside the collective contract suite (test/integration/collective/contract.ts), which
// test/gpu/nccl.test.ts and scripts/gpu-check.sh run with nccl for float32/float64/int32 host buffers: here only
// what the contract does not cover, float16/bfloat16 host buffers and device buffers (every dtype), checked against
// the contract's own reference (reference.ts), not a second copy of it. Shared by nccl.test.ts and gpu-check-main.ts.
import type { DType, HostBuffer, ReduceOp } from '../../collective/api.js';
import { OPS, reduced, value as referenceValue } from '../integration/collective/reference.js';
import type { DeviceBuffer, NcclProcessGroup } from '../../collective/nccl-backend.js';
import { fromBfloat16, fromFloat16, toBfloat16, toFloat16 } from '../../collective/native/half.js';

export const DTYPES: readonly DType[] = ['float32', 'float64', 'int32', 'float16', 'bfloat16'];
/** Host buffers of these dtypes only; the contract suite covers the others. */
export const HALF_DTYPES: readonly DType[] = ['float16', 'bfloat16'];
export { OPS };

/** Element i of rank r's input: reference.ts's values (small integers, exact in every dtype). */
function value(i: number, r: number): number {
  return referenceValue(r, i);
}

function make(dtype: DType, n: number, f: (i: number) => number): HostBuffer {
  switch (dtype) {
    case 'float32':
      return Float32Array.from({ length: n }, (_, i) => f(i));
    case 'float64':
      return Float64Array.from({ length: n }, (_, i) => f(i));
    case 'int32':
      return Int32Array.from({ length: n }, (_, i) => f(i));
    case 'float16':
      return Uint16Array.from({ length: n }, (_, i) => toFloat16(f(i)));
    case 'bfloat16':
      return Uint16Array.from({ length: n }, (_, i) => toBfloat16(f(i)));
  }
}

function read(dtype: DType, buf: HostBuffer, i: number): number {
  if (dtype === 'float16') return fromFloat16(buf[i]!);
  if (dtype === 'bfloat16') return fromBfloat16(buf[i]!);
  return buf[i]!;
}

/** The reduction over all `world` ranks of elements [0, length), computed by reference.ts; indexed by element. */
export function reference(op: ReduceOp, dtype: DType, world: number, length: number): (i: number) => number {
  const want = reduced(dtype === 'int32' ? 'int32' : 'float64', length, world, op);
  return (i) => want[i]!;
}

export interface CheckReport {
  passed: number;
  failures: string[];
}

function compare(report: CheckReport, what: string, dtype: DType, got: HostBuffer, want: (i: number) => number): void {
  let bad = 0;
  let first = '';
  for (let i = 0; i < got.length; i++) {
    const g = read(dtype, got, i);
    const w = want(i);
    const tol = dtype === 'float16' || dtype === 'bfloat16' ? 1e-2 * Math.max(1, Math.abs(w)) : 1e-6;
    if (!(Math.abs(g - w) <= tol)) {
      if (bad === 0) first = `element ${i} is ${g}, expected ${w}`;
      bad++;
    }
  }
  if (bad === 0) report.passed++;
  else report.failures.push(`${what}: ${bad} of ${got.length} elements wrong; first: ${first}`);
}

function opts(dtype: DType): { dtype?: DType } {
  return dtype === 'float16' || dtype === 'bfloat16' ? { dtype } : {};
}

/** Host-buffer checks for float16/bfloat16 × every op, in place and out of place (the contract covers the rest). */
export async function checkHost(g: NcclProcessGroup, sizes: readonly number[] = [0, 1, 1001]): Promise<CheckReport> {
  const report: CheckReport = { passed: 0, failures: [] };
  const r = g.rank;
  const n = g.worldSize;
  const note = (what: string) => (err: unknown) => {
    report.failures.push(`${what}: threw ${String(err)}`);
  };
  for (const dtype of HALF_DTYPES) {
    const o = opts(dtype);
    for (const size of sizes) {
      for (const op of OPS) {
        const tag = `host ${dtype} n=${size} ${op}`;
        const inPlace = make(dtype, size, (i) => value(i, r));
        await g
          .allreduce(inPlace, op, o)
          .then(() => compare(report, `${tag} allreduce in place`, dtype, inPlace, reference(op, dtype, n, size)))
          .catch(note(`${tag} allreduce in place`));
        const input = make(dtype, size, (i) => value(i, r));
        const output = make(dtype, size, () => 0);
        await g
          .allreduceInto(input, output, op, o)
          .then(() => {
            compare(report, `${tag} allreduce out of place`, dtype, output, reference(op, dtype, n, size));
            compare(report, `${tag} allreduce input unchanged`, dtype, input, (i) => value(i, r));
          })
          .catch(note(`${tag} allreduce out of place`));
        const red = make(dtype, size, (i) => value(i, r));
        await g
          .reduce(red, 0, op, o)
          .then(() => {
            if (r === 0) compare(report, `${tag} reduce`, dtype, red, reference(op, dtype, n, size));
          })
          .catch(note(`${tag} reduce`));
        const rsIn = make(dtype, size * n, (i) => value(i, r));
        const rsOut = make(dtype, size, () => 0);
        await g
          .reduceScatter(rsIn, rsOut, op, o)
          .then(() =>
            compare(
              report,
              `${tag} reduceScatter`,
              dtype,
              rsOut,
              (
                (all) => (i: number) =>
                  all(r * size + i)
              )(reference(op, dtype, n, size * n)),
            ),
          )
          .catch(note(`${tag} reduceScatter`));
      }
      const tag = `host ${dtype} n=${size}`;
      const b = make(dtype, size, (i) => value(i, r));
      await g
        .broadcast(b, 0, o)
        .then(() => compare(report, `${tag} broadcast`, dtype, b, (i) => value(i, 0)))
        .catch(note(`${tag} broadcast`));
      const agIn = make(dtype, size, (i) => value(i, r));
      const agOut = make(dtype, size * n, () => 0);
      await g
        .allgather(agIn, agOut, o)
        .then(() =>
          compare(report, `${tag} allgather`, dtype, agOut, (i) =>
            value(i % Math.max(1, size), Math.floor(i / Math.max(1, size))),
          ),
        )
        .catch(note(`${tag} allgather`));
      const sIn = make(dtype, size, (i) => value(i, r));
      const sOut = make(dtype, size, () => 0);
      await g
        .sendRecv(sIn, sOut, r, o)
        .then(() => compare(report, `${tag} sendRecv with self`, dtype, sOut, (i) => value(i, r)))
        .catch(note(`${tag} sendRecv with self`));
    }
  }
  await g
    .barrier()
    .then(() => report.passed++)
    .catch(note('barrier'));
  return report;
}

const BYTES: Record<DType, number> = { float32: 4, float64: 8, int32: 4, float16: 2, bfloat16: 2 };

/** Device-buffer checks (no host staging), in place and out of place, with a non-zero offset. */
export async function checkDevice(g: NcclProcessGroup, size = 4097): Promise<CheckReport> {
  const report: CheckReport = { passed: 0, failures: [] };
  const r = g.rank;
  const n = g.worldSize;
  const dev = g.device;
  const note = (what: string) => (err: unknown) => {
    report.failures.push(`${what}: threw ${String(err)}`);
  };
  for (const dtype of DTYPES) {
    const es = BYTES[dtype];
    const off = 64; // bytes; exercises offsets
    const a: DeviceBuffer = dev.alloc(off + size * n * es);
    const b: DeviceBuffer = dev.alloc(off + size * n * es);
    // Outputs start as a sentinel (77) that no check expects, so an element an op failed to write is caught.
    const sentinel = make(dtype, off / es + size * n, () => 77);
    const poison = (buf: DeviceBuffer): void => dev.upload(buf, sentinel, 0);
    try {
      for (const op of OPS) {
        const tag = `device ${dtype} ${op}`;
        dev.upload(
          a,
          make(dtype, size, (i) => value(i, r)),
          off,
        );
        await dev
          .allreduce(a, a, size, { dtype, op, sendOffsetBytes: off, recvOffsetBytes: off })
          .then(() => {
            const got = make(dtype, size, () => 0);
            dev.download(got, a, off);
            compare(report, `${tag} allreduce in place`, dtype, got, reference(op, dtype, n, size));
          })
          .catch(note(`${tag} allreduce in place`));
        dev.upload(
          a,
          make(dtype, size, (i) => value(i, r)),
          0,
        );
        poison(b);
        await dev
          .allreduce(a, b, size, { dtype, op, recvOffsetBytes: off })
          .then(() => {
            const got = make(dtype, size, () => 0);
            dev.download(got, b, off);
            compare(report, `${tag} allreduce out of place`, dtype, got, reference(op, dtype, n, size));
          })
          .catch(note(`${tag} allreduce out of place`));
        dev.upload(
          a,
          make(dtype, size * n, (i) => value(i, r)),
          0,
        );
        poison(b);
        await dev
          .reduceScatter(a, b, size, { dtype, op })
          .then(() => {
            const got = make(dtype, size, () => 0);
            dev.download(got, b, 0);
            compare(
              report,
              `${tag} reduceScatter`,
              dtype,
              got,
              (
                (all) => (i: number) =>
                  all(r * size + i)
              )(reference(op, dtype, n, size * n)),
            );
          })
          .catch(note(`${tag} reduceScatter`));
      }
      const tag = `device ${dtype}`;
      dev.upload(
        a,
        make(dtype, size, (i) => value(i, r)),
        0,
      );
      poison(b);
      await dev
        .allgather(a, b, size, { dtype })
        .then(() => {
          const got = make(dtype, size * n, () => 0);
          dev.download(got, b, 0);
          compare(report, `${tag} allgather`, dtype, got, (i) => value(i % size, Math.floor(i / size)));
        })
        .catch(note(`${tag} allgather`));
      poison(b);
      await dev
        .broadcast(a, b, size, 0, { dtype })
        .then(() => {
          const got = make(dtype, size, () => 0);
          dev.download(got, b, 0);
          compare(report, `${tag} broadcast`, dtype, got, (i) => value(i, 0));
        })
        .catch(note(`${tag} broadcast`));
      poison(b);
      await dev
        .sendRecv(a, b, size, r, { dtype })
        .then(() => {
          const got = make(dtype, size, () => 0);
          dev.download(got, b, 0);
          compare(report, `${tag} sendRecv with self`, dtype, got, (i) => value(i, r));
        })
        .catch(note(`${tag} sendRecv with self`));
    } finally {
      dev.free(a);
      dev.free(b);
    }
  }
  return report;
}
