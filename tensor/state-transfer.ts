// Live recovery's state agreement: after the process group of a new round is built, the ranks agree on which
// training state (model, optimizer, step, epoch, sampler position) they continue from, and copy it from a rank
// that holds it to the ranks that do not, over the new group, instead of reading a disk checkpoint.
//
// 1. Every rank claims (hasState, step, fingerprint) in one allgather; the fingerprint is 48 bits of a SHA-256 over
//    the state's tensors and counters, so two ranks at one step that nonetheless differ are caught.
// 2. `planStateAgreement` (pure) decides: nobody holds state → 'disk' (the newest checkpoint, today's path); every
//    rank holds the same state → 'keep'; otherwise 'peer': the source is the holder with the highest step (lowest
//    rank on ties) and the receivers are the ranks without state, behind it, or holding a different state.
// 3. `sendState`/`receiveState` broadcast it within a group made of the source (group rank 0) and the receivers:
//    a header, a JSON manifest (counters, the tracked objects' skeleton, and per tensor its name, dtype, shape,
//    offset and SHA-256), then the tensor bytes in chunks. The receiver refuses a manifest whose tensors do not fit
//    its own model (missing, other shape, other dtype) with a StateTransferError('STATE_MISMATCH') naming the
//    tensor, and data whose checksum does not match with 'CORRUPT' naming the tensor. Nothing is applied before
//    every check passed.
// Collective failures (a peer lost mid-transfer) propagate as the process group's CollectiveError: the group is
// then unusable and the caller waits for the next round, whose agreement starts again (receivers still hold no
// state, so they are receivers again).

import { createHash } from 'node:crypto';
import type { ProcessGroup } from '../collective/api.js';
import type { SavedState } from './elastic-state.js';
import { Tensor } from './tensor.js';

export interface StateClaim {
  readonly hasState: boolean;
  readonly step: number;
  /** 48-bit fingerprint of the state (0 when the rank holds none). */
  readonly fingerprint: number;
}

export type AgreementPlan =
  | { readonly kind: 'disk' }
  | { readonly kind: 'keep'; readonly step: number }
  | {
      readonly kind: 'peer';
      /** The rank whose state everyone continues from. */
      readonly source: number;
      readonly step: number;
      /** Ranks that receive it, ascending. */
      readonly receivers: readonly number[];
      /** Receivers that held state at the source's step but a different one (a divergence worth a warning). */
      readonly divergent: readonly number[];
    };

/** Decides where the state of a new round comes from (see the file comment). Pure. */
export function planStateAgreement(claims: readonly StateClaim[]): AgreementPlan {
  let source = -1;
  claims.forEach((c, r) => {
    if (c.hasState && (source < 0 || c.step > claims[source]!.step)) source = r;
  });
  if (source < 0) return { kind: 'disk' };
  const src = claims[source]!;
  const receivers: number[] = [];
  const divergent: number[] = [];
  claims.forEach((c, r) => {
    if (r === source) return;
    if (!c.hasState || c.step !== src.step) receivers.push(r);
    else if (c.fingerprint !== src.fingerprint) {
      receivers.push(r);
      divergent.push(r);
    }
  });
  if (receivers.length === 0) return { kind: 'keep', step: src.step };
  return { kind: 'peer', source, step: src.step, receivers, divergent };
}

export type StateTransferErrorCode = 'STATE_MISMATCH' | 'CORRUPT' | 'PROTOCOL';

/** A state transfer this rank refused or could not decode. STATE_MISMATCH is terminal; CORRUPT may be retried. */
export class StateTransferError extends Error {
  readonly code: StateTransferErrorCode;
  readonly tensorName: string | undefined;
  readonly sourceRank: number | undefined;
  constructor(
    code: StateTransferErrorCode,
    message: string,
    opts: { tensorName?: string; sourceRank?: number; cause?: unknown } = {},
  ) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'StateTransferError';
    this.code = code;
    this.tensorName = opts.tensorName;
    this.sourceRank = opts.sourceRank;
  }
}

export interface StateSnapshot {
  readonly tensors: Record<string, Tensor>;
  readonly state: SavedState;
}

function sha256Hex(t: Tensor): string {
  const d = t.data;
  return createHash('sha256')
    .update(new Uint8Array(d.buffer, d.byteOffset, d.byteLength))
    .digest('hex')
    .slice(0, 32);
}

/** 48 bits of a SHA-256 over the tensors (by sorted name, with shapes) and the counters. Exact in a float64. */
export function stateFingerprint(s: StateSnapshot): number {
  const h = createHash('sha256');
  const { step, epoch, samplesConsumed, json } = s.state;
  h.update(JSON.stringify({ step, epoch, samplesConsumed, json }));
  for (const name of Object.keys(s.tensors).sort()) {
    const t = s.tensors[name]!;
    h.update(name);
    h.update(JSON.stringify(t.shape));
    h.update(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
  }
  return h.digest().readUIntBE(0, 6);
}

/** One allgather of every rank's claim, in rank order. Rejects with the group's CollectiveError. */
export async function exchangeClaims(pg: ProcessGroup, claim: StateClaim): Promise<StateClaim[]> {
  const mine = new Float64Array([claim.hasState ? 1 : 0, claim.step, claim.fingerprint]);
  const all = new Float64Array(3 * pg.worldSize);
  if (pg.worldSize === 1) all.set(mine);
  else await pg.allgather(mine, all);
  return Array.from({ length: pg.worldSize }, (_, r) => ({
    hasState: all[3 * r] === 1,
    step: all[3 * r + 1]!,
    fingerprint: all[3 * r + 2]!,
  }));
}

interface TensorEntry {
  readonly name: string;
  readonly dtype: 'float32';
  readonly shape: readonly number[];
  /** Element offset into the flat payload. */
  readonly offset: number;
  readonly sha256: string;
}

interface Manifest {
  readonly version: 1;
  readonly state: SavedState;
  readonly tensors: readonly TensorEntry[];
}

const MAGIC = 0x7e75_11e5;
const VERSION = 1;
/** Elements per broadcast of the payload (16 MiB of float32). */
const CHUNK_ELEMENTS = 4 * 1024 * 1024;
const MAX_MANIFEST_BYTES = 64 * 1024 * 1024;

export interface TransferStats {
  /** Tensor bytes moved (per receiver). */
  readonly bytes: number;
  readonly tensorCount: number;
}

/**
 * The source's side: broadcasts `snap` to the group (this rank must be group rank 0). Every other member calls
 * `receiveState` at the same point. Rejects with the group's CollectiveError.
 */
export async function sendState(group: ProcessGroup, snap: StateSnapshot): Promise<TransferStats> {
  const names = Object.keys(snap.tensors).sort();
  let total = 0;
  const entries: TensorEntry[] = names.map((name) => {
    const t = snap.tensors[name]!;
    const e = { name, dtype: 'float32' as const, shape: [...t.shape], offset: total, sha256: sha256Hex(t) };
    total += t.data.length;
    return e;
  });
  const manifest: Manifest = { version: 1, state: snap.state, tensors: entries };
  const json = Buffer.from(JSON.stringify(manifest), 'utf8');
  const words = new Int32Array(Math.ceil(json.length / 4));
  new Uint8Array(words.buffer).set(json);
  await group.broadcast(new Float64Array([MAGIC, VERSION, json.length, total]), 0);
  await group.broadcast(words, 0);
  const flat = new Float32Array(total);
  for (const e of entries) flat.set(snap.tensors[e.name]!.data, e.offset);
  for (let from = 0; from < total; from += CHUNK_ELEMENTS) {
    await group.broadcast(flat.subarray(from, Math.min(total, from + CHUNK_ELEMENTS)), 0);
  }
  return { bytes: total * 4, tensorCount: entries.length };
}

/**
 * A receiver's side: takes the broadcast of group rank 0 (world rank `sourceRank`, for messages) and checks it
 * against `own` (this rank's current snapshot: every tensor it holds must arrive with the same dtype and shape;
 * extra tensors, e.g. optimizer state this rank has not created yet, are checked by the owner's loadStateDict).
 * Rejects with StateTransferError('STATE_MISMATCH' | 'CORRUPT' | 'PROTOCOL') naming the tensor, or with the group's
 * CollectiveError. The whole payload is always received first, so that the group stays in step.
 */
export async function receiveState(
  group: ProcessGroup,
  own: StateSnapshot,
  sourceRank: number,
): Promise<StateSnapshot & TransferStats> {
  const from = `state from rank ${sourceRank}`;
  const header = new Float64Array(4);
  await group.broadcast(header, 0);
  const [magic, version, manifestBytes, total] = header as unknown as [number, number, number, number];
  if (magic !== MAGIC || version !== VERSION) {
    throw new StateTransferError(
      'PROTOCOL',
      `${from}: header ${magic}/${version}: expected magic ${MAGIC} and version ${VERSION}`,
      { sourceRank },
    );
  }
  if (!Number.isInteger(manifestBytes) || manifestBytes < 2 || manifestBytes > MAX_MANIFEST_BYTES) {
    throw new StateTransferError(
      'PROTOCOL',
      `${from}: manifest of ${manifestBytes} bytes: expected 2..${MAX_MANIFEST_BYTES}`,
      { sourceRank },
    );
  }
  if (!Number.isInteger(total) || total < 0 || total > 2 ** 31) {
    throw new StateTransferError('PROTOCOL', `${from}: ${total} elements: expected 0..2^31`, { sourceRank });
  }
  const words = new Int32Array(Math.ceil(manifestBytes / 4));
  await group.broadcast(words, 0);
  const flat = new Float32Array(total);
  for (let at = 0; at < total; at += CHUNK_ELEMENTS) {
    await group.broadcast(flat.subarray(at, Math.min(total, at + CHUNK_ELEMENTS)), 0);
  }
  let manifest: Manifest;
  try {
    manifest = JSON.parse(Buffer.from(words.buffer, 0, manifestBytes).toString('utf8')) as Manifest;
  } catch (err) {
    throw new StateTransferError('PROTOCOL', `${from}: the manifest is not JSON`, { sourceRank, cause: err });
  }
  const tensors = checkManifest(manifest, own, total, from, sourceRank);
  for (const e of manifest.tensors) {
    const numel = e.shape.reduce((a, b) => a * b, 1);
    const t = new Tensor(flat.slice(e.offset, e.offset + numel), [...e.shape]);
    const sum = sha256Hex(t);
    if (sum !== e.sha256) {
      throw new StateTransferError(
        'CORRUPT',
        `${from}: tensor ${e.name}: checksum ${sum} does not match the sender's ${e.sha256}`,
        { tensorName: e.name, sourceRank },
      );
    }
    tensors[e.name] = t;
  }
  return { tensors, state: manifest.state, bytes: total * 4, tensorCount: manifest.tensors.length };
}

/** Validates the manifest's structure and its fit with this rank's own tensors. Returns an empty tensor map. */
function checkManifest(
  m: Manifest,
  own: StateSnapshot,
  total: number,
  from: string,
  sourceRank: number,
): Record<string, Tensor> {
  const bad = (msg: string, tensorName?: string): StateTransferError =>
    new StateTransferError(tensorName === undefined ? 'PROTOCOL' : 'STATE_MISMATCH', `${from}: ${msg}`, {
      tensorName,
      sourceRank,
    });
  if (m === null || typeof m !== 'object' || m.version !== 1 || !Array.isArray(m.tensors)) {
    throw bad('manifest: expected { version: 1, state, tensors: [...] }');
  }
  const s = m.state as Partial<SavedState> | undefined;
  for (const k of ['step', 'epoch', 'samplesConsumed'] as const) {
    if (s === undefined || !Number.isInteger(s[k]) || s[k]! < 0) {
      throw bad(`manifest: state.${k} ${JSON.stringify(s?.[k])}: expected an integer ≥ 0`);
    }
  }
  const seen = new Map<string, TensorEntry>();
  for (const raw of m.tensors as readonly unknown[]) {
    const e = (raw ?? {}) as Record<string, unknown>;
    const shape = e.shape;
    if (
      typeof e.name !== 'string' ||
      !Array.isArray(shape) ||
      !Number.isInteger(e.offset) ||
      typeof e.sha256 !== 'string'
    ) {
      throw bad(
        `manifest: tensor entry ${JSON.stringify(raw).slice(0, 120)}: expected { name, dtype, shape, offset, sha256 }`,
      );
    }
    const name = e.name;
    if (e.dtype !== 'float32') {
      throw bad(`tensor ${name}: dtype ${JSON.stringify(e.dtype)}, this worker holds float32`, name);
    }
    const offset = e.offset as number;
    const numel = shape.reduce((a: number, b: unknown) => a * Number(b), 1);
    if (shape.some((d) => !Number.isInteger(d) || (d as number) < 0) || offset < 0 || offset + numel > total) {
      throw bad(`tensor ${name}: shape [${shape.join(',')}] at offset ${offset} does not fit ${total} elements`, name);
    }
    seen.set(name, { name, dtype: 'float32', shape: shape as number[], offset, sha256: e.sha256 });
  }
  for (const [name, t] of Object.entries(own.tensors)) {
    const e = seen.get(name);
    if (e === undefined) throw bad(`tensor ${name} is missing (this worker holds it with shape [${t.shape}])`, name);
    if (e.shape.length !== t.shape.length || e.shape.some((d, i) => d !== t.shape[i])) {
      throw bad(`tensor ${name}: shape [${e.shape}], this worker's is [${t.shape}]`, name);
    }
  }
  return {};
}
