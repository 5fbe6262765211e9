import assert from 'node:assert/strict';
import { mkdirSync, readdirSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import {
  cachedSyntheticSplit,
  loadMnist,
  parseIdxImages,
  syntheticDigits,
  syntheticSplit,
  IMAGE_PIXELS,
} from '../../../examples/train/data.js';
import { parseFlags } from '../../../examples/train/flags.js';
import { renderReport } from '../../../examples/train/report.js';
import { readHistory } from '../../../examples/train/history.js';
import { spawnTs, tempDir, within } from './helpers.js';

function idxImages(n: number, pixel: (i: number, p: number) => number): Buffer {
  const b = Buffer.alloc(16 + n * IMAGE_PIXELS);
  b.writeUInt32BE(2051, 0);
  b.writeUInt32BE(n, 4);
  b.writeUInt32BE(28, 8);
  b.writeUInt32BE(28, 12);
  for (let i = 0; i < n; i++) for (let p = 0; p < IMAGE_PIXELS; p++) b[16 + i * IMAGE_PIXELS + p] = pixel(i, p);
  return b;
}

function idxLabels(labels: number[]): Buffer {
  const b = Buffer.alloc(8 + labels.length);
  b.writeUInt32BE(2049, 0);
  b.writeUInt32BE(labels.length, 4);
  labels.forEach((l, i) => (b[8 + i] = l));
  return b;
}

/** Writes MNIST-format files from synthetic digits (quantised to bytes); the test split is gzipped. */
function writeTinyMnist(dir: string, trainN: number, testN: number): void {
  mkdirSync(dir, { recursive: true });
  for (const [prefix, n, seed, gz] of [
    ['train', trainN, 5, false],
    ['t10k', testN, 6, true],
  ] as const) {
    const d = syntheticDigits(n, seed);
    const img = idxImages(n, (i, p) => Math.round(d.images[i * IMAGE_PIXELS + p]! * 255));
    const lbl = idxLabels(Array.from(d.labels));
    writeFileSync(join(dir, `${prefix}-images-idx3-ubyte${gz ? '.gz' : ''}`), gz ? gzipSync(img) : img);
    writeFileSync(join(dir, `${prefix}-labels-idx1-ubyte${gz ? '.gz' : ''}`), gz ? gzipSync(lbl) : lbl);
  }
}

describe('training data, flags and report', () => {
  it('renders the same synthetic digits for the same seed and different ones for another seed', () => {
    const a = syntheticDigits(50, 3);
    const b = syntheticDigits(50, 3);
    const c = syntheticDigits(50, 4);
    assert.deepEqual(a.images, b.images);
    assert.deepEqual(a.labels, b.labels);
    assert.notDeepEqual(a.images, c.images);
    assert.deepEqual(
      Array.from({ length: 10 }, (_, k) => a.labels.filter((l) => l === k).length),
      Array(10).fill(5),
      'balanced classes',
    );
    assert.ok(a.images.every((v) => v >= 0 && v <= 1));
  });

  it('caches the synthetic set on disk and renders it again when the cache is damaged', (t) => {
    const dir = tempDir(t, 'data-cache');
    const rendered = syntheticSplit(60, 20, 5);
    const first = cachedSyntheticSplit(dir, 60, 20, 5);
    assert.equal(first.cached, false);
    const second = cachedSyntheticSplit(dir, 60, 20, 5);
    assert.equal(second.cached, true);
    for (const split of [first.split, second.split]) {
      assert.deepEqual(split.train.images, rendered.train.images);
      assert.deepEqual(split.train.labels, rendered.train.labels);
      assert.deepEqual(split.test.images, rendered.test.images);
      assert.deepEqual(split.test.labels, rendered.test.labels);
      assert.equal(split.source, rendered.source);
    }
    assert.equal(cachedSyntheticSplit(dir, 60, 20, 6).cached, false, 'another seed is another file');
    const [file] = readdirSync(join(dir, 'data-cache')).filter((f) => f.includes('-5.bin'));
    truncateSync(join(dir, 'data-cache', file!), 1000);
    const again = cachedSyntheticSplit(dir, 60, 20, 5);
    assert.equal(again.cached, false, 'a truncated cache is not trusted');
    assert.deepEqual(again.split.train.images, rendered.train.images);
  });

  it('loads MNIST IDX files, plain and gzipped, and rejects a wrong magic number by name', (t) => {
    const dir = tempDir(t, 'mnist');
    writeTinyMnist(dir, 30, 20);
    const split = loadMnist(dir);
    assert.equal(split.train.n, 30);
    assert.equal(split.test.n, 20);
    const ref = syntheticDigits(20, 6);
    assert.deepEqual(Array.from(split.test.labels), Array.from(ref.labels));
    assert.ok(Math.abs(split.test.images[100]! - ref.images[100]!) <= 0.5 / 255 + 1e-6, 'pixels scaled to [0, 1]');
    assert.equal(loadMnist(dir, { train: 10 }).train.n, 10);
    const bad = idxImages(1, () => 0);
    bad.writeUInt32BE(2049, 0);
    assert.throws(() => parseIdxImages(bad, 'x-images'), /x-images: magic 2049: expected 2051/);
    assert.throws(() => loadMnist(join(dir, 'nope')), /train-images-idx3-ubyte \(or .*\.gz\) not found/);
  });

  it('trains on MNIST files with --mnist', async (t) => {
    const dir = tempDir(t, 'mnist-train');
    writeTinyMnist(join(dir, 'data'), 256, 64);
    const p = spawnTs(
      t,
      'examples/train/train.ts',
      [
        '--mnist',
        join(dir, 'data'),
        '--epochs',
        '1',
        '--hidden',
        '16',
        '--checkpoint-dir',
        join(dir, 'ckpt'),
        '--batch-size',
        '32',
      ],
      { RANK: '', WORLD_SIZE: '' },
    );
    const e = await within(60_000, 'train.ts --mnist', p.exited);
    assert.equal(e.code, 0, p.output());
    assert.match(e.stdout, /MNIST \(.*data\), 256 train \/ 64 held-out/);
    assert.equal(readHistory(join(dir, 'ckpt')).filter((h) => h.type === 'done').length, 1);
  });

  it('rejects bad flags with the flag, the value and the expectation', async (t) => {
    assert.throws(() => parseFlags(['--epochs', '0'], {}), /--epochs: expected an integer in \[1, 1000\] \(got "0"\)/);
    assert.throws(() => parseFlags(['--chaos', '1-3'], {}), /--chaos 1-3: expected RANK:STEP/);
    assert.throws(() => parseFlags(['--chaos', '1:3:melt'], {}), /--chaos 1:3:melt: .*MODE one of exit, kill, hang/);
    const chaos = parseFlags(['--chaos', '1:60:kill'], {});
    assert.ok(chaos !== 'help');
    assert.deepEqual(chaos.chaos, { rank: 1, step: 60, mode: 'kill' });
    const plain = parseFlags(['--chaos', '1:60'], {});
    assert.ok(plain !== 'help');
    assert.deepEqual(plain.chaos, { rank: 1, step: 60, mode: 'exit' }, 'exit is the default mode');
    assert.throws(() => parseFlags(['--hidden', '8,x'], {}), /--hidden 8,x/);
    assert.throws(() => parseFlags(['--frobnicate'], {}), /unknown flag --frobnicate/);
    assert.throws(() => parseFlags(['--lr'], {}), /--lr: expected a value/);
    const f = parseFlags(['--small', '--epochs=7'], { TENSILE_CHECKPOINT_DIR: '/ckpt' });
    assert.ok(f !== 'help');
    assert.equal(f.epochs, 7, 'explicit flags win over --small');
    assert.equal(f.trainSize, 3000);
    assert.equal(f.checkpointDir, '/ckpt', 'the launcher-provided directory is the default');
    const p = spawnTs(t, 'examples/train/train.ts', ['--batch-policy', 'sometimes'], {});
    const e = await within(30_000, 'train.ts with a bad flag', p.exited);
    assert.equal(e.code, 2);
    assert.match(e.stderr, /--batch-policy "sometimes"/);
  });

  it('renders a self-contained report with curves, a timeline and the failures', () => {
    const html = renderReport(
      [
        { type: 'round', timeMs: 0, round: 0, restartCount: 0, worldSize: 2, resumedStep: 0, resumedFrom: null },
        { type: 'step', timeMs: 10, step: 10, epoch: 0, loss: 2, worldSize: 2 },
        { type: 'checkpoint', timeMs: 15, step: 10, file: '/c/ckpt-10', reason: 'periodic' },
        { type: 'failure', timeMs: 20, rank: 1, step: 12, round: 0, message: 'boom <x>' },
        {
          type: 'round',
          timeMs: 30,
          round: 1,
          restartCount: 1,
          worldSize: 2,
          resumedStep: 10,
          resumedFrom: '/c/ckpt-10',
        },
        { type: 'step', timeMs: 40, step: 20, epoch: 0, loss: 1, worldSize: 2 },
        {
          type: 'epoch',
          timeMs: 50,
          epoch: 0,
          step: 20,
          loss: 1.5,
          trainAccuracy: 0.5,
          testAccuracy: 0.6,
          samplesPerSec: 100,
          worldSize: 2,
          restartCount: 1,
        },
        { type: 'done', timeMs: 60, step: 20, testAccuracy: 0.6, target: 0.95, reached: false },
      ],
      { title: 'run', source: 'synthetic' },
    );
    assert.equal((html.match(/<svg/g) ?? []).length, 4, 'timeline, goodput, loss and accuracy charts');
    // Down from the failure (20) to the next round (30) of a 60 ms run; 2 steps repeated, at no known step time.
    assert.match(html, /Goodput <b>83\.3%<\/b>: 0\.1 s wall time, 10 ms down in 1 outage\(s\)/);
    assert.match(html, /<td>1<\/td><td style="text-align:left">restart<\/td><td>10 ms<\/td><td>2<\/td>/);
    assert.match(html, /2 round\(s\), 1 failure\(s\), 1 checkpoint\(s\)/);
    assert.match(html, /rank 1 failed at step 12: boom &lt;x&gt;/, 'messages are escaped');
    assert.match(html, /not reached/);
    assert.doesNotMatch(html, /<script|<link|src=/);
  });
});
