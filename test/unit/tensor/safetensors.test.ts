import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import {
  TensorError,
  arange,
  decodeSafetensors,
  encodeSafetensors,
  loadSafetensors,
  saveSafetensors,
  tensor,
} from '../../../tensor/index.js';

const dir = mkdtempSync(join(tmpdir(), 'tensile-st-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const isCorrupt = (name: string | undefined, re: RegExp) => (e: unknown) =>
  e instanceof TensorError && e.code === 'CHECKPOINT_CORRUPT' && e.tensorName === name && re.test(e.message);

test('save then load returns the same tensors and metadata and leaves no temp file', async () => {
  const path = join(dir, 'a.safetensors');
  await saveSafetensors(path, { w: arange(6).reshape([2, 3]), b: tensor([0.5]), s: tensor(3) }, { step: '12' });
  const { tensors, metadata } = await loadSafetensors(path);
  assert.deepEqual(tensors.w!.tolist(), [
    [0, 1, 2],
    [3, 4, 5],
  ]);
  assert.deepEqual(tensors.s!.shape, []);
  assert.deepEqual(metadata, { step: '12' });
  assert.deepEqual(readdirSync(dir), ['a.safetensors']);
  const buf = readFileSync(path);
  assert.equal(Number(buf.readBigUInt64LE(0)) % 8, 0, 'header padded to 8 bytes');
});

test('overwriting replaces the file atomically and a failed write keeps the old one', async () => {
  const path = join(dir, 'b.safetensors');
  await saveSafetensors(path, { x: tensor([1]) });
  await saveSafetensors(path, { x: tensor([2]) });
  assert.equal((await loadSafetensors(path)).tensors.x!.item(), 2);
  await assert.rejects(
    saveSafetensors(join(dir, 'missing-dir', 'c.safetensors'), { x: tensor([1]) }),
    (e: unknown) => e instanceof TensorError && e.code === 'CHECKPOINT_IO',
  );
  assert.ok(readdirSync(dir).every((f) => !f.includes('.tmp-')));
});

test('truncated, corrupt and inconsistent files are rejected with the tensor and the problem', async () => {
  const good = encodeSafetensors({ a: arange(4), b: arange(2) });
  assert.throws(
    () => decodeSafetensors(good.subarray(0, good.length - 3), 'f'),
    isCorrupt('b', /runs past the end of the file.*truncated/),
  );
  assert.throws(
    () => decodeSafetensors(good.subarray(0, 5), 'f'),
    isCorrupt(undefined, /shorter than the 8-byte header/),
  );
  const badJson = Buffer.from(good);
  badJson[8] = 0x78; // "x" instead of "{"
  assert.throws(() => decodeSafetensors(badJson, 'f'), isCorrupt(undefined, /header is not valid JSON/));
  const mk = (header: object, dataBytes: number) => {
    const h = Buffer.from(JSON.stringify(header));
    const b = Buffer.alloc(8 + h.length + dataBytes);
    b.writeBigUInt64LE(BigInt(h.length));
    h.copy(b, 8);
    return b;
  };
  assert.throws(
    () => decodeSafetensors(mk({ w: { dtype: 'F32', shape: [2, 2], data_offsets: [0, 12] } }, 12), 'f'),
    isCorrupt('w', /12 bytes of data for F32 shape \[2,2\] \(needs 16\)/),
  );
  assert.throws(
    () => decodeSafetensors(mk({ w: { dtype: 'C64', shape: [1], data_offsets: [0, 8] } }, 8), 'f'),
    isCorrupt('w', /unsupported dtype "C64"/),
  );
  assert.throws(
    () =>
      decodeSafetensors(
        mk(
          {
            a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] },
            b: { dtype: 'F32', shape: [1], data_offsets: [4, 8] },
          },
          8,
        ),
        'f',
      ),
    isCorrupt('b', /overlaps tensor "a"/),
  );
  const path = join(dir, 'trunc.safetensors');
  writeFileSync(path, good.subarray(0, 20));
  await assert.rejects(loadSafetensors(path), (e: unknown) => e instanceof TensorError && e.message.startsWith(path));
  await assert.rejects(
    loadSafetensors(join(dir, 'nope')),
    (e: unknown) => e instanceof TensorError && e.code === 'CHECKPOINT_IO',
  );
});

test('files with other dtypes load converted to float32', () => {
  const h = Buffer.from(
    JSON.stringify({
      i: { dtype: 'I64', shape: [2], data_offsets: [0, 16] },
      h: { dtype: 'F16', shape: [1], data_offsets: [16, 18] },
    }),
  );
  const b = Buffer.alloc(8 + h.length + 18);
  b.writeBigUInt64LE(BigInt(h.length));
  h.copy(b, 8);
  b.writeBigInt64LE(-3n, 8 + h.length);
  b.writeBigInt64LE(7n, 16 + h.length);
  b.writeUInt16LE(0x3c00, 24 + h.length); // 1.0 in half precision
  const { tensors } = decodeSafetensors(b);
  assert.deepEqual(tensors.i!.toArray(), [-3, 7]);
  assert.deepEqual(tensors.h!.toArray(), [1]);
});
