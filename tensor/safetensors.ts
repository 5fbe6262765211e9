// Checkpoints in the safetensors format (https://github.com/huggingface/safetensors):
//   8 bytes little-endian u64 N | N bytes JSON header (space padded to 8-byte alignment) | raw little-endian data.
// Header: { "<name>": { "dtype": "F32", "shape": [...], "data_offsets": [begin, end] }, "__metadata__": {...} },
// offsets relative to the start of the data section. tensile writes F32; it reads F32, F64, F16, BF16, I64, I32,
// I16, I8, U8 and BOOL (converted to float32, since tensile tensors are float32).
import { randomBytes } from 'node:crypto';
import { open, readFile, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { TensorError } from './api.js';
import { Tensor, numelOf } from './tensor.js';

export interface SafetensorsFile {
  readonly tensors: Record<string, Tensor>;
  /** The `__metadata__` string map (empty when the file has none). */
  readonly metadata: Record<string, string>;
}

const DTYPE_BYTES: Record<string, number> = {
  F32: 4,
  F64: 8,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
};

/** Serialises tensors (in key order as given) and metadata to a safetensors buffer. */
export function encodeSafetensors(tensors: Record<string, Tensor>, metadata?: Record<string, string>): Buffer {
  const header: Record<string, unknown> = {};
  if (metadata !== undefined && Object.keys(metadata).length > 0) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') {
        throw new TensorError('INVALID_ARGUMENT', `saveSafetensors: metadata "${k}" must be a string, got ${typeof v}`);
      }
    }
    header.__metadata__ = metadata;
  }
  let offset = 0;
  const entries = Object.entries(tensors);
  for (const [name, t] of entries) {
    if (name === '__metadata__')
      throw new TensorError('INVALID_ARGUMENT', 'saveSafetensors: "__metadata__" is reserved');
    if (!(t instanceof Tensor)) {
      throw new TensorError('INVALID_ARGUMENT', `saveSafetensors: "${name}" is not a Tensor`, { tensorName: name });
    }
    const bytes = t.numel * 4;
    header[name] = { dtype: 'F32', shape: [...t.shape], data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  const pad = (8 - (Buffer.byteLength(json) % 8)) % 8;
  json += ' '.repeat(pad);
  const headerBytes = Buffer.from(json, 'utf8');
  const out = Buffer.allocUnsafe(8 + headerBytes.length + offset);
  out.writeBigUInt64LE(BigInt(headerBytes.length), 0);
  headerBytes.copy(out, 8);
  let at = 8 + headerBytes.length;
  for (const [, t] of entries) {
    const src = t.data;
    // Little-endian hosts (x86, arm64) copy the bytes as they are.
    Buffer.from(src.buffer, src.byteOffset, src.byteLength).copy(out, at);
    at += src.byteLength;
  }
  return out;
}

function corrupt(source: string, message: string, tensorName?: string): TensorError {
  return new TensorError('CHECKPOINT_CORRUPT', `${source}: ${message}`, tensorName === undefined ? {} : { tensorName });
}

/** Parses a safetensors buffer; `source` names the file in errors. Throws TensorError('CHECKPOINT_CORRUPT'). */
export function decodeSafetensors(buf: Buffer, source = 'safetensors'): SafetensorsFile {
  if (buf.length < 8) throw corrupt(source, `file is ${buf.length} bytes, shorter than the 8-byte header length`);
  const n = buf.readBigUInt64LE(0);
  if (n > BigInt(buf.length - 8)) {
    throw corrupt(source, `header length ${n} exceeds the file (${buf.length} bytes): truncated or not safetensors`);
  }
  const headerLen = Number(n);
  let header: unknown;
  try {
    header = JSON.parse(buf.subarray(8, 8 + headerLen).toString('utf8'));
  } catch (err) {
    throw new TensorError('CHECKPOINT_CORRUPT', `${source}: header is not valid JSON`, { cause: err });
  }
  if (header === null || typeof header !== 'object' || Array.isArray(header)) {
    throw corrupt(source, 'header is not a JSON object');
  }
  const dataStart = 8 + headerLen;
  const dataLen = buf.length - dataStart;
  const tensors: Record<string, Tensor> = {};
  let metadata: Record<string, string> = {};
  const spans: { name: string; begin: number; end: number }[] = [];
  for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (raw === null || typeof raw !== 'object' || Object.values(raw).some((v) => typeof v !== 'string')) {
        throw corrupt(source, '__metadata__ must map strings to strings');
      }
      metadata = raw as Record<string, string>;
      continue;
    }
    const e = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (e === null || typeof e !== 'object') throw corrupt(source, `tensor "${name}": entry is not an object`, name);
    const dtype = e.dtype;
    if (typeof dtype !== 'string' || !(dtype in DTYPE_BYTES)) {
      throw corrupt(
        source,
        `tensor "${name}": unsupported dtype ${JSON.stringify(dtype)} (supported: ${Object.keys(DTYPE_BYTES).join(', ')})`,
        name,
      );
    }
    const shape = e.shape;
    if (!Array.isArray(shape) || shape.some((d) => !Number.isInteger(d) || d < 0)) {
      throw corrupt(
        source,
        `tensor "${name}": shape ${JSON.stringify(shape)} is not a list of non-negative integers`,
        name,
      );
    }
    const offs = e.data_offsets;
    if (
      !Array.isArray(offs) ||
      offs.length !== 2 ||
      !offs.every((o) => Number.isInteger(o) && o >= 0) ||
      offs[0] > offs[1]
    ) {
      throw corrupt(source, `tensor "${name}": data_offsets ${JSON.stringify(offs)} are not [begin, end]`, name);
    }
    const [begin, end] = offs as [number, number];
    const want = numelOf(shape as number[]) * DTYPE_BYTES[dtype]!;
    if (end - begin !== want) {
      throw corrupt(
        source,
        `tensor "${name}": ${end - begin} bytes of data for ${dtype} shape [${shape}] (needs ${want})`,
        name,
      );
    }
    if (end > dataLen) {
      throw corrupt(
        source,
        `tensor "${name}": data [${begin}, ${end}) runs past the end of the file (${dataLen} data bytes): truncated`,
        name,
      );
    }
    spans.push({ name, begin, end });
    tensors[name] = new Tensor(convert(buf, dataStart + begin, dtype, numelOf(shape as number[])), shape as number[]);
  }
  spans.sort((a, b) => a.begin - b.begin);
  for (let i = 1; i < spans.length; i++) {
    if (spans[i]!.begin < spans[i - 1]!.end) {
      throw corrupt(source, `tensor "${spans[i]!.name}": data overlaps tensor "${spans[i - 1]!.name}"`, spans[i]!.name);
    }
  }
  return { tensors, metadata };
}

function convert(buf: Buffer, at: number, dtype: string, n: number): Float32Array {
  const out = new Float32Array(n);
  const dv = new DataView(buf.buffer, buf.byteOffset + at, n * DTYPE_BYTES[dtype]!);
  switch (dtype) {
    case 'F32':
      for (let i = 0; i < n; i++) out[i] = dv.getFloat32(i * 4, true);
      break;
    case 'F64':
      for (let i = 0; i < n; i++) out[i] = dv.getFloat64(i * 8, true);
      break;
    case 'I64':
      for (let i = 0; i < n; i++) out[i] = Number(dv.getBigInt64(i * 8, true));
      break;
    case 'I32':
      for (let i = 0; i < n; i++) out[i] = dv.getInt32(i * 4, true);
      break;
    case 'I16':
      for (let i = 0; i < n; i++) out[i] = dv.getInt16(i * 2, true);
      break;
    case 'I8':
      for (let i = 0; i < n; i++) out[i] = dv.getInt8(i);
      break;
    case 'U8':
    case 'BOOL':
      for (let i = 0; i < n; i++) out[i] = dv.getUint8(i);
      break;
    case 'F16':
      for (let i = 0; i < n; i++) out[i] = halfToFloat(dv.getUint16(i * 2, true));
      break;
    case 'BF16': {
      const f = new DataView(new ArrayBuffer(4));
      for (let i = 0; i < n; i++) {
        f.setUint32(0, dv.getUint16(i * 2, true) << 16);
        out[i] = f.getFloat32(0);
      }
      break;
    }
  }
  return out;
}

function halfToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * f * 2 ** -24;
  if (e === 31) return f === 0 ? s * Infinity : NaN;
  return s * (1 + f / 1024) * 2 ** (e - 15);
}

/**
 * Writes `tensors` atomically: a temp file in the same directory, fsync, rename over `path`, fsync of the
 * directory. A crash at any point leaves either the old file or the new one, never a partial file.
 * Throws TensorError('CHECKPOINT_IO') on I/O failure (the temp file is removed).
 */
export async function saveSafetensors(
  path: string,
  tensors: Record<string, Tensor>,
  metadata?: Record<string, string>,
): Promise<void> {
  const bytes = encodeSafetensors(tensors, metadata);
  const dir = dirname(path);
  const tmp = join(dir, `.${basename(path)}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
  try {
    const fh = await open(tmp, 'wx');
    try {
      await fh.writeFile(bytes);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw new TensorError('CHECKPOINT_IO', `saveSafetensors ${path}: ${(err as Error).message}`, { cause: err });
  }
  try {
    const dh = await open(dir, 'r');
    try {
      await dh.sync();
    } finally {
      await dh.close();
    }
  } catch {
    // Some filesystems refuse fsync on directories; the rename itself is still atomic.
  }
}

/** Reads a safetensors file. Throws TensorError('CHECKPOINT_IO') when unreadable, 'CHECKPOINT_CORRUPT' when bad. */
export async function loadSafetensors(path: string): Promise<SafetensorsFile> {
  let buf: Buffer;
  try {
    buf = await readFile(path);
  } catch (err) {
    throw new TensorError('CHECKPOINT_IO', `loadSafetensors ${path}: ${(err as Error).message}`, { cause: err });
  }
  return decodeSafetensors(buf, path);
}
