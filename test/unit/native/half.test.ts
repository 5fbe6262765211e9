import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  fromBfloat16,
  fromFloat16,
  packHalf,
  toBfloat16,
  toFloat16,
  unpackHalf,
} from '../../../collective/native/half.js';

test('float16 conversion matches IEEE binary16 for normals, subnormals, limits and specials', () => {
  const cases: Array<[number, number]> = [
    [0, 0x0000],
    [-0, 0x8000],
    [1, 0x3c00],
    [-2, 0xc000],
    [0.5, 0x3800],
    [65504, 0x7bff],
    [65520, 0x7c00], // rounds up to infinity
    [2 ** -24, 0x0001],
    [2 ** -14, 0x0400],
    [Infinity, 0x7c00],
    [-Infinity, 0xfc00],
    [1 + 2 ** -11, 0x3c00], // tie → even
    [1 + 3 * 2 ** -11, 0x3c02], // tie → even (up)
  ];
  for (const [x, bits] of cases) assert.equal(toFloat16(x), bits, `toFloat16(${x})`);
  assert.ok(Number.isNaN(fromFloat16(toFloat16(NaN))));
  for (const bits of [0x0001, 0x03ff, 0x0400, 0x3c00, 0x7bff, 0xc000]) assert.equal(toFloat16(fromFloat16(bits)), bits);
});

test('bfloat16 conversion rounds to nearest even and round-trips', () => {
  assert.equal(toBfloat16(1), 0x3f80);
  assert.equal(toBfloat16(-2), 0xc000);
  assert.equal(fromBfloat16(0x3f80), 1);
  assert.equal(toBfloat16(1 + 2 ** -8), 0x3f80); // tie → even (down)
  assert.equal(toBfloat16(1 + 3 * 2 ** -8), 0x3f82); // tie → even (up)
  assert.ok(Number.isNaN(fromBfloat16(toBfloat16(NaN))));
  assert.deepEqual(Array.from(unpackHalf(packHalf([0.5, 1024, -3], 'bfloat16'), 'bfloat16')), [0.5, 1024, -3]);
  assert.deepEqual(Array.from(unpackHalf(packHalf([0.5, 1024, -3], 'float16'), 'float16')), [0.5, 1024, -3]);
});
