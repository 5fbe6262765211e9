// Element-wise reduction kernels and buffer validation shared by the TCP backend (pure, no I/O).
import { CollectiveError, type CollectiveOptions, type DType, type HostBuffer, type ReduceOp } from './api.js';
import { loadBlas, type Blas } from './native/blas.js';

export type TcpBuffer = Float32Array | Float64Array | Int32Array;

export const REDUCE_OPS: readonly ReduceOp[] = ['sum', 'prod', 'min', 'max', 'avg'];

/** The dtype of a TCP-capable buffer; throws INVALID_ARGUMENT for anything else (naming what was given). */
export function tcpDType(buf: HostBuffer, opts: CollectiveOptions | undefined, op: string): TcpBuffer {
  const given = opts?.dtype;
  let actual: DType;
  if (buf instanceof Float32Array) actual = 'float32';
  else if (buf instanceof Float64Array) actual = 'float64';
  else if (buf instanceof Int32Array) actual = 'int32';
  else if (buf instanceof Uint16Array)
    throw new CollectiveError(
      'INVALID_ARGUMENT',
      `${op}: dtype ${given ?? 'float16/bfloat16'} (Uint16Array) is only supported by the nccl backend; tcp takes float32, float64, int32`,
      { op },
    );
  else {
    const name = (buf as object | null | undefined)?.constructor?.name ?? String(buf);
    throw new CollectiveError(
      'INVALID_ARGUMENT',
      `${op}: buffer of type ${name}: expected Float32Array, Float64Array or Int32Array`,
      {
        op,
      },
    );
  }
  if (given !== undefined && given !== actual)
    throw new CollectiveError(
      'INVALID_ARGUMENT',
      `${op}: dtype '${String(given)}' does not match the ${actual} buffer given`,
      { op },
    );
  return buf;
}

export function checkReduceOp(op: unknown, name: string): ReduceOp {
  if (typeof op === 'string' && (REDUCE_OPS as readonly string[]).includes(op)) return op as ReduceOp;
  throw new CollectiveError(
    'INVALID_ARGUMENT',
    `${name}: reduce op ${JSON.stringify(op)}: expected one of ${REDUCE_OPS.join(', ')}`,
    {
      op: name,
    },
  );
}

/** float32 sums at least this long go to BLAS saxpy (below it the call overhead outweighs the JS loop). */
const BLAS_MIN_ELEMENTS = 2048;
let blas: Blas | null | undefined;

/**
 * The addon's BLAS when it loads and TENSILE_TCP_BLAS is not '0'; null otherwise (JS loops are used then). Sums use
 * it only while it runs one thread (TENSILE_BLAS_THREADS=1 or OMP_NUM_THREADS=1).
 */
export function reductionBlas(): Blas | null {
  if (blas === undefined) {
    try {
      blas = process.env.TENSILE_TCP_BLAS === '0' ? null : loadBlas();
    } catch {
      blas = null;
    }
  }
  return blas;
}

/** Test hook: forces the JS kernels (false) or re-detects BLAS (true). */
export function useBlasForReductions(on: boolean): void {
  blas = on ? undefined : null;
}

/** dst[i] = dst[i] (op) src[i]; `avg` accumulates as a sum (divide with `finishAvg`). Same length assumed. */
export function reduceInto(dst: TcpBuffer, src: TcpBuffer, op: ReduceOp): void {
  const n = dst.length;
  switch (op) {
    case 'sum':
    case 'avg': {
      if (n >= BLAS_MIN_ELEMENTS && dst instanceof Float32Array && src instanceof Float32Array) {
        const b = reductionBlas();
        // Only a single-threaded BLAS: OpenBLAS's thread pool (spinning workers in every rank) made a 64 MB
        // four-rank allreduce 1.5× slower than the JS loop on 2 cores; one thread beat the JS loop by 1.2–1.8×.
        if (b && b.threads() === 1) {
          b.saxpy(n, 1, src, dst);
          return;
        }
      }
      sumInto(dst, src, n);
      return;
    }
    case 'prod':
      for (let i = 0; i < n; i++) dst[i]! *= src[i]!;
      return;
    case 'min':
      for (let i = 0; i < n; i++) if (src[i]! < dst[i]! || src[i] !== src[i]) dst[i] = src[i]!;
      return;
    case 'max':
      for (let i = 0; i < n; i++) if (src[i]! > dst[i]! || src[i] !== src[i]) dst[i] = src[i]!;
      return;
  }
}

/** dst += src over n elements, unrolled by 4 (about 1.5× the plain loop in V8). */
function sumInto(dst: TcpBuffer, src: TcpBuffer, n: number): void {
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    dst[i]! += src[i]!;
    dst[i + 1]! += src[i + 1]!;
    dst[i + 2]! += src[i + 2]!;
    dst[i + 3]! += src[i + 3]!;
  }
  for (; i < n; i++) dst[i]! += src[i]!;
}

/** Divides a summed buffer by the world size (int32 truncates toward zero, like a C cast). */
export function finishAvg(buf: TcpBuffer, worldSize: number): void {
  if (worldSize === 1) return;
  for (let i = 0; i < buf.length; i++) buf[i] = buf[i]! / worldSize;
}

export function bytesOf(buf: TcpBuffer): Uint8Array {
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
}

export function sameKind(a: TcpBuffer, b: HostBuffer, op: string): void {
  if (a.constructor !== b.constructor)
    throw new CollectiveError(
      'INVALID_ARGUMENT',
      `${op}: input is ${a.constructor.name} but output is ${b.constructor.name}; expected the same type`,
      {
        op,
      },
    );
}

/** An op's timeout (its own, else the group's `groupMs`), or the INVALID_ARGUMENT error when it is not positive. */
export function opTimeoutMs(
  op: string,
  opts: CollectiveOptions | undefined,
  groupMs: number,
): number | CollectiveError {
  const timeoutMs = opts?.timeoutMs ?? groupMs;
  return timeoutMs > 0
    ? timeoutMs
    : new CollectiveError('INVALID_ARGUMENT', `${op}: timeoutMs ${timeoutMs}: expected > 0`, { op });
}

/** Throws INVALID_ARGUMENT unless `root` is a rank of a group of `worldSize`. */
export function checkRoot(root: number, worldSize: number, op: string): void {
  if (!Number.isInteger(root) || root < 0 || root >= worldSize)
    throw new CollectiveError('INVALID_ARGUMENT', `${op}: root ${root}: expected an integer in [0, ${worldSize})`, {
      op,
    });
}

/**
 * How a two-buffer collective's lengths relate: 'same' (allreduceInto), 'gather' (output = input × worldSize),
 * 'scatter' (input = output × worldSize).
 */
export type PairShape = 'same' | 'gather' | 'scatter';

/**
 * Validates the operands of a two-buffer collective, in this order: each a TCP-capable buffer, both one type, the
 * lengths related as `shape` says; throws INVALID_ARGUMENT naming the lengths otherwise.
 */
export function pairOperands(
  input: HostBuffer,
  output: HostBuffer,
  opts: CollectiveOptions | undefined,
  op: string,
  shape: PairShape,
  worldSize: number,
): { inp: TcpBuffer; out: TcpBuffer } {
  const inp = tcpDType(input, opts, op);
  const out = tcpDType(output, opts, op);
  sameKind(inp, out, op);
  let problem: string | null = null;
  if (shape === 'same' && out.length !== inp.length) {
    problem = `output.length ${out.length} must equal input.length ${inp.length}`;
  } else if (shape === 'gather' && out.length !== inp.length * worldSize) {
    problem = `output.length ${out.length} must equal input.length ${inp.length} × worldSize ${worldSize}`;
  } else if (shape === 'scatter' && inp.length !== out.length * worldSize) {
    problem = `input.length ${inp.length} must equal output.length ${out.length} × worldSize ${worldSize}`;
  }
  if (problem !== null) throw new CollectiveError('INVALID_ARGUMENT', `${op}: ${problem}`, { op });
  return { inp, out };
}
