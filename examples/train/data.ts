// Data sets for the main job: a deterministic synthetic digit set rendered from a built-in bitmap font (nothing is
// downloaded), and a loader for MNIST's IDX files (plain or .gz) for users who have them.
//
// Both give `Dataset { images: Float32Array (n × 784, values in [0, 1]), labels: Int32Array, n, side }`.

import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { mulberry32 } from '../../common/random.js';

export const IMAGE_SIDE = 28;
export const IMAGE_PIXELS = IMAGE_SIDE * IMAGE_SIDE;
export const NUM_CLASSES = 10;

export interface Dataset {
  readonly images: Float32Array;
  readonly labels: Int32Array;
  readonly n: number;
  readonly side: number;
}

export interface Split {
  readonly train: Dataset;
  readonly test: Dataset;
  readonly source: string;
}

export class DataError extends Error {
  readonly code = 'DATA' as const;
  constructor(message: string, opts: { cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'DataError';
  }
}

// 5×7 glyphs, one string per row, '#' = ink. Two styles per digit so a class is not a single template.
const FONT: readonly (readonly string[])[][] = [
  [
    ['.###.', '#...#', '#..##', '#.#.#', '##..#', '#...#', '.###.'],
    ['.###.', '#...#', '#...#', '#...#', '#...#', '#...#', '.###.'],
  ],
  [
    ['..#..', '.##..', '..#..', '..#..', '..#..', '..#..', '.###.'],
    ['...#.', '..##.', '.#.#.', '...#.', '...#.', '...#.', '...#.'],
  ],
  [
    ['.###.', '#...#', '....#', '...#.', '..#..', '.#...', '#####'],
    ['.###.', '#...#', '....#', '..##.', '.#...', '#....', '#####'],
  ],
  [
    ['#####', '...#.', '..#..', '...#.', '....#', '#...#', '.###.'],
    ['.###.', '#...#', '....#', '..##.', '....#', '#...#', '.###.'],
  ],
  [
    ['...#.', '..##.', '.#.#.', '#..#.', '#####', '...#.', '...#.'],
    ['#..#.', '#..#.', '#..#.', '#####', '...#.', '...#.', '...#.'],
  ],
  [
    ['#####', '#....', '####.', '....#', '....#', '#...#', '.###.'],
    ['#####', '#....', '#....', '####.', '....#', '....#', '####.'],
  ],
  [
    ['..##.', '.#...', '#....', '####.', '#...#', '#...#', '.###.'],
    ['.###.', '#....', '#....', '####.', '#...#', '#...#', '.###.'],
  ],
  [
    ['#####', '....#', '...#.', '..#..', '.#...', '.#...', '.#...'],
    ['#####', '....#', '....#', '...#.', '..#..', '..#..', '..#..'],
  ],
  [
    ['.###.', '#...#', '#...#', '.###.', '#...#', '#...#', '.###.'],
    ['.###.', '#...#', '.#.#.', '..#..', '.#.#.', '#...#', '.###.'],
  ],
  [
    ['.###.', '#...#', '#...#', '.####', '....#', '...#.', '.##..'],
    ['.###.', '#...#', '#...#', '.####', '....#', '....#', '.###.'],
  ],
];
const GLYPH_W = 5;
const GLYPH_H = 7;

function gaussian(rand: () => number): number {
  const u = Math.max(rand(), 1e-12);
  const v = rand();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
}

function inkAt(glyph: readonly string[], gx: number, gy: number): number {
  const x = Math.floor(gx);
  const y = Math.floor(gy);
  if (x < 0 || y < 0 || x >= GLYPH_W || y >= GLYPH_H) return 0;
  return glyph[y]![x] === '#' ? 1 : 0;
}

/** Renders one 28×28 digit into `out` at `offset`, with random affine jitter, stroke width and noise. */
function renderDigit(digit: number, rand: () => number, out: Float32Array, offset: number): void {
  const styles = FONT[digit]!;
  const glyph = styles[Math.floor(rand() * styles.length)]!;
  const angle = (rand() - 0.5) * 0.4; // ±11.5°
  const scale = 2.6 + rand() * 0.8; // output pixels per font pixel
  const aspect = 0.85 + rand() * 0.3;
  const shear = (rand() - 0.5) * 0.4;
  const dx = (rand() - 0.5) * 5;
  const dy = (rand() - 0.5) * 5;
  const thickness = 0.25 + rand() * 0.2; // half-width of a stroke sample, in font pixels
  const noise = 0.08 + rand() * 0.08;
  const cos = Math.cos(angle);
  const sin = Math.sin(angle);
  const cx = IMAGE_SIDE / 2 + dx;
  const cy = IMAGE_SIDE / 2 + dy;
  for (let py = 0; py < IMAGE_SIDE; py++) {
    for (let px = 0; px < IMAGE_SIDE; px++) {
      // Inverse map: output pixel centre → font coordinates.
      const ox = px + 0.5 - cx;
      const oy = py + 0.5 - cy;
      const rx = cos * ox + sin * oy;
      const ry = -sin * ox + cos * oy;
      const fy = ry / scale + GLYPH_H / 2;
      const fx = (rx - shear * ry) / (scale * aspect) + GLYPH_W / 2;
      // 4-tap supersample inside a square of half-width `thickness` gives soft, variable-width strokes.
      const ink =
        (inkAt(glyph, fx - thickness, fy - thickness) +
          inkAt(glyph, fx + thickness, fy - thickness) +
          inkAt(glyph, fx - thickness, fy + thickness) +
          inkAt(glyph, fx + thickness, fy + thickness)) /
        4;
      const v = ink + noise * gaussian(rand);
      out[offset + py * IMAGE_SIDE + px] = v < 0 ? 0 : v > 1 ? 1 : v;
    }
  }
}

/** A deterministic synthetic digit set: the same (n, seed) always gives the same bytes. Labels are balanced. */
export function syntheticDigits(n: number, seed: number): Dataset {
  if (!Number.isInteger(n) || n < 1) throw new DataError(`syntheticDigits: n=${n}: expected an integer ≥ 1`);
  const rand = mulberry32(seed);
  const images = new Float32Array(n * IMAGE_PIXELS);
  const labels = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const digit = i % NUM_CLASSES;
    labels[i] = digit;
    renderDigit(digit, rand, images, i * IMAGE_PIXELS);
  }
  // Shuffle the order (labels and images together) so a prefix is not class-sorted.
  const order = new Int32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    const t = order[i]!;
    order[i] = order[j]!;
    order[j] = t;
  }
  const outImages = new Float32Array(n * IMAGE_PIXELS);
  const outLabels = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const src = order[i]!;
    outImages.set(images.subarray(src * IMAGE_PIXELS, (src + 1) * IMAGE_PIXELS), i * IMAGE_PIXELS);
    outLabels[i] = labels[src]!;
  }
  return { images: outImages, labels: outLabels, n, side: IMAGE_SIDE };
}

/** Train and test splits drawn from disjoint seeds. */
export function syntheticSplit(trainN: number, testN: number, seed: number): Split {
  return {
    train: syntheticDigits(trainN, seed),
    test: syntheticDigits(testN, seed ^ 0x5eed1234),
    source: `synthetic digits (seed ${seed})`,
  };
}

const CACHE_MAGIC = 'tensile-digits-v1\n';

/**
 * `syntheticSplit`, kept in `<dir>/data-cache/` so that a worker that starts later (a replacement joining live, a
 * restarted group) reads the set in milliseconds instead of rendering it for seconds. The file is written once,
 * atomically (temp file + rename; concurrent writers write identical bytes), and used only when its header names
 * the same sizes and seed and its length is exact; anything else is rendered again. Returns whether it was cached.
 */
export function cachedSyntheticSplit(
  dir: string,
  trainN: number,
  testN: number,
  seed: number,
): { split: Split; cached: boolean } {
  const header = `${CACHE_MAGIC}${trainN} ${testN} ${seed}\n`;
  const headerBytes = 64;
  const sizes = [trainN * IMAGE_PIXELS * 4, trainN * 4, testN * IMAGE_PIXELS * 4, testN * 4];
  const total = headerBytes + sizes.reduce((a, b) => a + b, 0);
  const file = join(dir, 'data-cache', `synthetic-${trainN}-${testN}-${seed}.bin`);
  const source = `synthetic digits (seed ${seed})`;
  if (existsSync(file)) {
    try {
      const buf = readFileSync(file);
      if (buf.length === total && buf.subarray(0, header.length).toString('latin1') === header) {
        let at = headerBytes;
        // Views on the file's buffer (every section starts 4-byte aligned after the 64-byte header); a copy only
        // when the buffer itself is not aligned.
        const take = <T>(ctor: new (b: ArrayBuffer, offset?: number, length?: number) => T, bytes: number): T => {
          const offset = buf.byteOffset + at;
          at += bytes;
          if (offset % 4 === 0) return new ctor(buf.buffer as ArrayBuffer, offset, bytes / 4);
          return new ctor(buf.buffer.slice(offset, offset + bytes) as ArrayBuffer);
        };
        const trainImages = take(Float32Array, sizes[0]!);
        const trainLabels = take(Int32Array, sizes[1]!);
        const testImages = take(Float32Array, sizes[2]!);
        const testLabels = take(Int32Array, sizes[3]!);
        return {
          split: {
            train: { images: trainImages, labels: trainLabels, n: trainN, side: IMAGE_SIDE },
            test: { images: testImages, labels: testLabels, n: testN, side: IMAGE_SIDE },
            source,
          },
          cached: true,
        };
      }
    } catch {
      // Unreadable: render it again below.
    }
  }
  const split = syntheticSplit(trainN, testN, seed);
  const tmp = `${file}.${process.pid}.tmp`;
  try {
    mkdirSync(join(dir, 'data-cache'), { recursive: true });
    const head = Buffer.alloc(headerBytes);
    head.write(header, 'latin1');
    const bytes = (a: Float32Array | Int32Array): Buffer => Buffer.from(a.buffer, a.byteOffset, a.byteLength);
    writeFileSync(
      tmp,
      Buffer.concat([
        head,
        bytes(split.train.images),
        bytes(split.train.labels),
        bytes(split.test.images),
        bytes(split.test.labels),
      ]),
    );
    renameSync(tmp, file);
  } catch {
    rmSync(tmp, { force: true }); // a read-only or full directory only costs the next worker the rendering
  }
  return { split, cached: false };
}

function readMaybeGz(path: string): Buffer {
  const raw = readFileSync(path);
  return raw[0] === 0x1f && raw[1] === 0x8b ? gunzipSync(raw) : raw;
}

/** Parses an IDX image file (magic 2051): returns images scaled to [0, 1]. */
export function parseIdxImages(buf: Buffer, name: string): { images: Float32Array; n: number; side: number } {
  if (buf.length < 16) throw new DataError(`${name}: ${buf.length} bytes: an IDX image file has a 16-byte header`);
  const magic = buf.readUInt32BE(0);
  if (magic !== 2051) throw new DataError(`${name}: magic ${magic}: expected 2051 (IDX unsigned-byte images)`);
  const n = buf.readUInt32BE(4);
  const rows = buf.readUInt32BE(8);
  const cols = buf.readUInt32BE(12);
  if (rows !== IMAGE_SIDE || cols !== IMAGE_SIDE) {
    throw new DataError(`${name}: images are ${rows}×${cols}: expected ${IMAGE_SIDE}×${IMAGE_SIDE}`);
  }
  const want = 16 + n * rows * cols;
  if (buf.length < want) throw new DataError(`${name}: ${buf.length} bytes: expected ${want} for ${n} images`);
  const images = new Float32Array(n * rows * cols);
  for (let i = 0; i < images.length; i++) images[i] = buf[16 + i]! / 255;
  return { images, n, side: rows };
}

/** Parses an IDX label file (magic 2049). */
export function parseIdxLabels(buf: Buffer, name: string): Int32Array {
  if (buf.length < 8) throw new DataError(`${name}: ${buf.length} bytes: an IDX label file has an 8-byte header`);
  const magic = buf.readUInt32BE(0);
  if (magic !== 2049) throw new DataError(`${name}: magic ${magic}: expected 2049 (IDX unsigned-byte labels)`);
  const n = buf.readUInt32BE(4);
  if (buf.length < 8 + n) throw new DataError(`${name}: ${buf.length} bytes: expected ${8 + n} for ${n} labels`);
  const labels = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const l = buf[8 + i]!;
    if (l >= NUM_CLASSES) throw new DataError(`${name}: label ${l} at index ${i}: expected 0–9`);
    labels[i] = l;
  }
  return labels;
}

function findFile(dir: string, stem: string): string {
  for (const cand of [stem, `${stem}.gz`, stem.replace(/-idx/, '.idx'), `${stem.replace(/-idx/, '.idx')}.gz`]) {
    const p = join(dir, cand);
    if (existsSync(p)) return p;
  }
  throw new DataError(`--mnist ${dir}: ${stem} (or ${stem}.gz) not found`);
}

function loadIdxPair(dir: string, prefix: string): Dataset {
  const imgPath = findFile(dir, `${prefix}-images-idx3-ubyte`);
  const lblPath = findFile(dir, `${prefix}-labels-idx1-ubyte`);
  const { images, n, side } = parseIdxImages(readMaybeGz(imgPath), imgPath);
  const labels = parseIdxLabels(readMaybeGz(lblPath), lblPath);
  if (labels.length !== n) {
    throw new DataError(`${lblPath}: ${labels.length} labels but ${imgPath} has ${n} images: expected equal counts`);
  }
  return { images, labels, n, side };
}

/** Loads MNIST from `dir` (train-* and t10k-* IDX files, optionally gzipped); `limit` caps each split. */
export function loadMnist(dir: string, limit?: { train?: number; test?: number }): Split {
  const cap = (d: Dataset, k?: number): Dataset =>
    k === undefined || k >= d.n
      ? d
      : { images: d.images.slice(0, k * IMAGE_PIXELS), labels: d.labels.slice(0, k), n: k, side: d.side };
  return {
    train: cap(loadIdxPair(dir, 'train'), limit?.train),
    test: cap(loadIdxPair(dir, 't10k'), limit?.test),
    source: `MNIST (${dir})`,
  };
}
