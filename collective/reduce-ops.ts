// Element-wise reduction kernels and buffer validation shared by the TCP backend (pure, no I/O).
import { CollectiveError, type CollectiveOptions, type DType, type HostBuffer, type ReduceOp } from './api.js';

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

/** dst[i] = dst[i] (op) src[i]; `avg` accumulates as a sum (divide with `finishAvg`). Same length assumed. */
export function reduceInto(dst: TcpBuffer, src: TcpBuffer, op: ReduceOp): void {
  const n = dst.length;
  switch (op) {
    case 'sum':
    case 'avg':
      for (let i = 0; i < n; i++) dst[i]! += src[i]!;
      return;
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
