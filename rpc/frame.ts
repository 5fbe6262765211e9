// Wire format (pure; no sockets).
//
// A frame is one logical message:
//   u8 version (=1) | u8 type | u16 flags | u32 requestId | u32 bodyBytes | u16 tensorCount | u16 reserved
//   tensorCount x ( u8 dtype | 3 x u8 reserved | u32 byteLength )
//   body (UTF-8 JSON) | zero padding to a multiple of 8 | each tensor's raw bytes, each padded to a multiple of 8
// Tensors therefore travel as raw little-endian bytes beside the body, never inside it.
//
// Frames travel inside gRPC messages ("segments"), each starting with a kind byte:
//   'F' then one or more (u32 frameBytes | frame)       small frames written in the same tick share a segment
//   'S' u32 totalBytes                                   a frame too large for one segment (grpc-js refuses > 4 MB):
//                                                        the next gRPC messages are its raw pieces, back to back,
//                                                        zero-copy views on the tensors, until totalBytes arrived
//   'P' u16 dataPort | 16-byte token                     server -> client, first: where the data channel listens
//   'X'                                                  from here on this direction's frames take the data
//                                                        channel (data-channel.ts); nothing after it on gRPC
// Anything else, or lengths that do not add up, is a FrameError: the caller gets a typed error when the request id
// can be read, otherwise the connection is closed.

export const FRAME_VERSION = 1;
export const HEADER_BYTES = 16;
export const TENSOR_DESC_BYTES = 8;
/** Largest gRPC message we write: well under grpc-js's 4 MiB default receive limit. */
export const SEGMENT_BYTES = 1024 * 1024;

/**
 * Every message type on the wire, so that no two users take one number. Request types are 1..63; the agent serves
 * the RRef and bootstrap ones itself and hands the others to its extensions (BACKWARD and CLEANUP_CONTEXT belong to
 * distributed autograd, rpc/dist-autograd.ts). RET and ERR answer any request.
 */
export const MsgType = {
  CALL: 1,
  REMOTE: 2,
  FETCH: 3,
  RREF_DELETE: 4,
  RREF_FORK: 5,
  RREF_ACCEPT: 6,
  BACKWARD: 7,
  CLEANUP_CONTEXT: 8,
  JOIN: 9,
  HELLO: 10,
  BARRIER: 11,
  RET: 64,
  ERR: 65,
} as const;
export type MsgTypeValue = (typeof MsgType)[keyof typeof MsgType];
const KNOWN_TYPES = new Set<number>(Object.values(MsgType));
export function isRequestType(t: number): boolean {
  return t > 0 && t < 64;
}
export function isKnownType(t: number): boolean {
  return KNOWN_TYPES.has(t);
}

export const DType = { float32: 1, float64: 2, int32: 3, uint8: 4 } as const;
export type RawTensor = Float32Array | Float64Array | Int32Array | Uint8Array;

export function dtypeOf(a: RawTensor): number {
  if (a instanceof Float32Array) return DType.float32;
  if (a instanceof Float64Array) return DType.float64;
  if (a instanceof Int32Array) return DType.int32;
  return DType.uint8;
}

export interface Frame {
  readonly type: number;
  readonly flags: number;
  readonly requestId: number;
  /** Raw JSON body bytes (decoded by codec.ts). */
  readonly body: Uint8Array;
  readonly tensors: RawTensor[];
}

export class FrameError extends Error {
  readonly code = 'PROTOCOL' as const;
  /** The request id when the header could be read, so the caller can be answered. */
  readonly requestId?: number;
  readonly type?: number;
  constructor(message: string, requestId?: number, type?: number) {
    super(message);
    this.name = 'FrameError';
    this.requestId = requestId;
    this.type = type;
  }
}

const pad8 = (n: number): number => (n + 7) & ~7;
const ZEROS = Buffer.alloc(8);

/** Encodes a frame as a list of buffers (header+body in one, each tensor a zero-copy view). */
export function encodeFrame(
  type: number,
  requestId: number,
  body: Uint8Array,
  tensors: readonly RawTensor[] = [],
  flags = 0,
): { parts: Buffer[]; bytes: number } {
  const headLen = HEADER_BYTES + tensors.length * TENSOR_DESC_BYTES;
  const metaLen = pad8(headLen + body.byteLength);
  const head = Buffer.allocUnsafe(metaLen);
  head.writeUInt8(FRAME_VERSION, 0);
  head.writeUInt8(type, 1);
  head.writeUInt16LE(flags, 2);
  head.writeUInt32LE(requestId >>> 0, 4);
  head.writeUInt32LE(body.byteLength, 8);
  head.writeUInt16LE(tensors.length, 12);
  head.writeUInt16LE(0, 14);
  let off = HEADER_BYTES;
  for (const t of tensors) {
    head.writeUInt32LE(dtypeOf(t), off); // dtype in the low byte, reserved bytes zero
    head.writeUInt32LE(t.byteLength, off + 4);
    off += TENSOR_DESC_BYTES;
  }
  head.set(body, off);
  head.fill(0, off + body.byteLength);
  const parts: Buffer[] = [head];
  let bytes = metaLen;
  for (const t of tensors) {
    parts.push(Buffer.from(t.buffer as ArrayBuffer, t.byteOffset, t.byteLength));
    const padded = pad8(t.byteLength);
    if (padded !== t.byteLength) parts.push(ZEROS.subarray(0, padded - t.byteLength));
    bytes += padded;
  }
  return { parts, bytes };
}

function viewTensor(dtype: number, buf: Buffer, off: number, len: number, rid: number, type: number): RawTensor {
  const abs = buf.byteOffset + off;
  const ab = buf.buffer as ArrayBuffer;
  const copy = (): ArrayBuffer => ab.slice(abs, abs + len);
  switch (dtype) {
    case DType.float32:
    case DType.int32: {
      if (len % 4 !== 0) throw new FrameError(`tensor byte length ${len} is not a multiple of 4`, rid, type);
      const C = dtype === DType.float32 ? Float32Array : Int32Array;
      return abs % 4 === 0 ? new C(ab, abs, len / 4) : new C(copy());
    }
    case DType.float64:
      if (len % 8 !== 0) throw new FrameError(`tensor byte length ${len} is not a multiple of 8`, rid, type);
      return abs % 8 === 0 ? new Float64Array(ab, abs, len / 8) : new Float64Array(copy());
    case DType.uint8:
      return new Uint8Array(ab, abs, len);
    default:
      throw new FrameError(`unknown tensor dtype ${dtype} (expected 1..4)`, rid, type);
  }
}

/** Decodes one complete frame. Throws FrameError on anything malformed or truncated. */
export function decodeFrame(buf: Buffer): Frame {
  if (buf.byteLength < HEADER_BYTES) {
    throw new FrameError(`frame of ${buf.byteLength} bytes is shorter than the ${HEADER_BYTES}-byte header`);
  }
  const requestId = buf.readUInt32LE(4);
  const type = buf.readUInt8(1);
  const version = buf.readUInt8(0);
  if (version !== FRAME_VERSION) {
    throw new FrameError(`frame version ${version} is not supported (expected ${FRAME_VERSION})`, requestId, type);
  }
  const flags = buf.readUInt16LE(2);
  const bodyLen = buf.readUInt32LE(8);
  const nTensors = buf.readUInt16LE(12);
  const headLen = HEADER_BYTES + nTensors * TENSOR_DESC_BYTES;
  if (headLen + bodyLen > buf.byteLength) {
    throw new FrameError(
      `truncated frame: header says ${nTensors} tensors and ${bodyLen} body bytes, frame has ${buf.byteLength} bytes`,
      requestId,
      type,
    );
  }
  const body = buf.subarray(headLen, headLen + bodyLen);
  let off = pad8(headLen + bodyLen);
  const tensors: RawTensor[] = [];
  for (let i = 0; i < nTensors; i++) {
    const d = HEADER_BYTES + i * TENSOR_DESC_BYTES;
    const dtype = buf.readUInt8(d);
    const len = buf.readUInt32LE(d + 4);
    if (off + len > buf.byteLength) {
      throw new FrameError(
        `truncated frame: tensor ${i} needs bytes ${off}..${off + len}, frame has ${buf.byteLength}`,
        requestId,
        type,
      );
    }
    tensors.push(viewTensor(dtype, buf, off, len, requestId, type));
    off += pad8(len);
  }
  if (off !== pad8(buf.byteLength) && off !== buf.byteLength) {
    throw new FrameError(`frame has ${buf.byteLength - off} trailing bytes`, requestId, type);
  }
  return { type, flags, requestId, body, tensors };
}

const KIND_FRAMES = 0x46; // 'F'
const KIND_START = 0x53; // 'S'

/**
 * Packs encoded frames into gRPC segments: small frames share one 'F' segment; a frame larger than `segmentBytes`
 * goes alone as an 'S' segment followed by its raw pieces. Returns the segments in write order.
 */
export function packSegments(frames: { parts: Buffer[]; bytes: number }[], segmentBytes = SEGMENT_BYTES): Buffer[] {
  const out: Buffer[] = [];
  let batch: Buffer[] = [];
  let batchBytes = 0;
  const flush = (): void => {
    if (batch.length === 0) return;
    out.push(Buffer.concat(batch, batchBytes));
    batch = [];
    batchBytes = 0;
  };
  for (const f of frames) {
    if (f.bytes + 5 > segmentBytes) {
      flush();
      packLarge(f, segmentBytes, out);
      continue;
    }
    if (batchBytes + 4 + f.bytes > segmentBytes) flush();
    if (batch.length === 0) {
      batch.push(Buffer.of(KIND_FRAMES));
      batchBytes = 1;
    }
    const len = Buffer.allocUnsafe(4);
    len.writeUInt32LE(f.bytes, 0);
    batch.push(len, ...f.parts);
    batchBytes += 4 + f.bytes;
  }
  flush();
  return out;
}

function packLarge(f: { parts: Buffer[]; bytes: number }, segmentBytes: number, out: Buffer[]): void {
  const start = Buffer.allocUnsafe(5);
  start.writeUInt8(KIND_START, 0);
  start.writeUInt32LE(f.bytes, 1);
  out.push(start);
  // The pieces are views on the frame's parts (the tensors' own memory): no copy here.
  for (const p of f.parts) {
    for (let off = 0; off < p.byteLength; off += segmentBytes) {
      out.push(p.subarray(off, Math.min(p.byteLength, off + segmentBytes)));
    }
  }
}

/**
 * Reassembles frames from segments, one connection's worth of state. `push` returns the complete frames' raw bytes;
 * it throws FrameError for a malformed segment (the connection should then be closed: the stream is out of sync).
 */
export class SegmentReader {
  private partial: Buffer | null = null;
  private filled = 0;

  /** True while a chunked frame is incomplete: the next gRPC message is a raw piece of it, whatever its first byte. */
  get inChunk(): boolean {
    return this.partial !== null;
  }

  push(seg: Buffer): Buffer[] {
    // While a chunked frame is incomplete, every gRPC message is a raw piece of it.
    if (this.partial) return this.append(seg);
    if (seg.byteLength === 0) throw new FrameError('empty segment');
    const kind = seg[0];
    if (kind === KIND_FRAMES) {
      const out: Buffer[] = [];
      let off = 1;
      while (off < seg.byteLength) {
        if (off + 4 > seg.byteLength) throw new FrameError('truncated frame length in segment');
        const len = seg.readUInt32LE(off);
        off += 4;
        if (off + len > seg.byteLength) {
          // The header may still be readable: report the request id so the caller can be answered.
          const rest = seg.subarray(off);
          const rid = rest.byteLength >= 8 ? rest.readUInt32LE(4) : undefined;
          const type = rest.byteLength >= 2 ? rest.readUInt8(1) : undefined;
          throw new FrameError(`truncated frame: length ${len} but ${seg.byteLength - off} bytes left`, rid, type);
        }
        out.push(seg.subarray(off, off + len));
        off += len;
      }
      return out;
    }
    if (kind === KIND_START) {
      if (seg.byteLength !== 5) throw new FrameError(`chunk start segment of ${seg.byteLength} bytes (expected 5)`);
      const total = seg.readUInt32LE(1);
      if (total < HEADER_BYTES) throw new FrameError(`chunked frame of ${total} bytes is shorter than a header`);
      this.partial = Buffer.allocUnsafe(total);
      this.filled = 0;
      return [];
    }
    throw new FrameError(`unknown segment kind 0x${kind.toString(16)}`);
  }

  private append(piece: Buffer): Buffer[] {
    const p = this.partial!;
    if (this.filled + piece.byteLength > p.byteLength) {
      this.partial = null;
      throw new FrameError(`chunked frame overflows its declared ${p.byteLength} bytes`);
    }
    p.set(piece, this.filled);
    this.filled += piece.byteLength;
    if (this.filled < p.byteLength) return [];
    this.partial = null;
    return [p];
  }
}
