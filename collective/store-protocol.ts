// Wire format of the bootstrap store (shared by store-server.ts and store.ts).
//
// Every frame is `u32 bodyBytes` (big endian) followed by the body.
//   request body:  u8 op | u32 requestId | u32 timeoutMs | u16 fieldCount | fieldCount × (u32 bytes | bytes)
//   response body: u8 status | u32 requestId | u16 fieldCount | fieldCount × (u32 bytes | bytes)
// A frame whose declared size exceeds MAX_FRAME_BYTES, an unknown op or a malformed body closes that connection.

export const MAX_FRAME_BYTES = 64 * 1024 * 1024;

export const Op = {
  set: 1,
  get: 2,
  wait: 3,
  add: 4,
  compareSet: 5,
  delete: 6,
  ping: 7,
} as const;
export type OpCode = (typeof Op)[keyof typeof Op];

export const Status = { ok: 0, timeout: 1, error: 2 } as const;
export type StatusCode = (typeof Status)[keyof typeof Status];

export interface Request {
  readonly op: number;
  readonly requestId: number;
  readonly timeoutMs: number;
  readonly fields: Uint8Array[];
}

export interface Response {
  readonly status: number;
  readonly requestId: number;
  readonly fields: Uint8Array[];
}

export class FrameError extends Error {
  readonly code = 'FRAME' as const;
}

function encodeFields(head: Buffer, fields: readonly Uint8Array[]): Buffer {
  let bytes = head.length + 2;
  for (const f of fields) bytes += 4 + f.byteLength;
  const out = Buffer.allocUnsafe(4 + bytes);
  out.writeUInt32BE(bytes, 0);
  head.copy(out, 4);
  let o = 4 + head.length;
  out.writeUInt16BE(fields.length, o);
  o += 2;
  for (const f of fields) {
    out.writeUInt32BE(f.byteLength, o);
    o += 4;
    out.set(f, o);
    o += f.byteLength;
  }
  return out;
}

export function encodeRequest(req: Request): Buffer {
  const head = Buffer.allocUnsafe(9);
  head.writeUInt8(req.op, 0);
  head.writeUInt32BE(req.requestId >>> 0, 1);
  head.writeUInt32BE(Math.max(0, Math.min(0xffffffff, Math.floor(req.timeoutMs))), 5);
  return encodeFields(head, req.fields);
}

export function encodeResponse(res: Response): Buffer {
  const head = Buffer.allocUnsafe(5);
  head.writeUInt8(res.status, 0);
  head.writeUInt32BE(res.requestId >>> 0, 1);
  return encodeFields(head, res.fields);
}

function decodeFields(body: Buffer, offset: number): Uint8Array[] {
  if (body.length < offset + 2) throw new FrameError(`frame of ${body.length} bytes is too short for its header`);
  const count = body.readUInt16BE(offset);
  let o = offset + 2;
  const fields: Uint8Array[] = [];
  for (let i = 0; i < count; i++) {
    if (body.length < o + 4) throw new FrameError(`field ${i} header runs past the frame end`);
    const len = body.readUInt32BE(o);
    o += 4;
    if (body.length < o + len) throw new FrameError(`field ${i} (${len} bytes) runs past the frame end`);
    fields.push(body.subarray(o, o + len));
    o += len;
  }
  if (o !== body.length) throw new FrameError(`frame has ${body.length - o} trailing bytes`);
  return fields;
}

export function decodeRequest(body: Buffer): Request {
  if (body.length < 9) throw new FrameError(`request frame of ${body.length} bytes is shorter than 11`);
  return {
    op: body.readUInt8(0),
    requestId: body.readUInt32BE(1),
    timeoutMs: body.readUInt32BE(5),
    fields: decodeFields(body, 9),
  };
}

export function decodeResponse(body: Buffer): Response {
  if (body.length < 5) throw new FrameError(`response frame of ${body.length} bytes is shorter than 7`);
  return { status: body.readUInt8(0), requestId: body.readUInt32BE(1), fields: decodeFields(body, 5) };
}

/**
 * Splits a byte stream into frame bodies. `push` returns the complete bodies seen so far and throws FrameError when a
 * declared size exceeds MAX_FRAME_BYTES.
 */
export class FrameReader {
  private chunks: Buffer[] = [];
  private buffered = 0;

  push(chunk: Buffer): Buffer[] {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    const out: Buffer[] = [];
    for (;;) {
      if (this.buffered < 4) return out;
      const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.buffered);
      this.chunks = [all];
      const size = all.readUInt32BE(0);
      if (size > MAX_FRAME_BYTES) throw new FrameError(`frame declares ${size} bytes; the limit is ${MAX_FRAME_BYTES}`);
      if (this.buffered < 4 + size) return out;
      out.push(all.subarray(4, 4 + size));
      const rest = all.subarray(4 + size);
      this.chunks = rest.length > 0 ? [rest] : [];
      this.buffered = rest.length;
    }
  }
}

export const utf8 = new TextEncoder();
export const toBytes = (v: Uint8Array | string): Uint8Array => (typeof v === 'string' ? utf8.encode(v) : v);
