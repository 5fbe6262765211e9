// The figure line every benchmark prints (bench/lib/figures.ts) and its reading back (bench/lib/results.mjs).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatFigure, repeatsFromArgv } from '../../../bench/lib/figures.js';
import { parseFigureLine } from '../../../bench/lib/results.mjs';

const cases: Array<[string, Parameters<typeof formatFigure>[0], string]> = [
  [
    'a side-by-side figure that meets its ratio target',
    { name: 'launch_nproc1', tensile: 0.744, peer: 4.568, unit: 's', on: 'ratio', target: { op: '<=', value: 0.5 } },
    'figure=launch_nproc1 tensile=0.744 peer=4.568 unit=s ratio=0.163 target=<=0.5 met=yes',
  ],
  [
    'a side-by-side figure that misses it',
    { name: 'echo', tensile: 0.194, peer: 0.53, unit: 'GB/s', on: 'ratio', target: { op: '>=', value: 1 } },
    'figure=echo tensile=0.194 peer=0.530 unit=GB/s ratio=0.366 target=>=1 met=no',
  ],
  [
    'values by magnitude: whole numbers from 1000, one decimal from 100',
    { name: 'thr', tensile: 27602.4, peer: 452.61, unit: 'calls/s', on: 'ratio', target: { op: '>=', value: 2 } },
    'figure=thr tensile=27602 peer=452.6 unit=calls/s ratio=60.985 target=>=2 met=yes',
  ],
  [
    'fixed digits when asked',
    { name: 'rss', tensile: 61.54, peer: 231.1, unit: 'MB', on: 'ratio', target: { op: '<=', value: 0.33 }, digits: 1 },
    'figure=rss tensile=61.5 peer=231.1 unit=MB ratio=0.266 target=<=0.33 met=yes',
  ],
  [
    'a peer that could not run: peer=failed, never met',
    { name: 'lat', tensile: 80, peer: undefined, unit: 'us', on: 'ratio', target: { op: '<=', value: 0.5 } },
    'figure=lat tensile=80.000 peer=failed unit=us ratio=- target=<=0.5 met=no',
  ],
  [
    'a peer value that is not a number counts as failed too',
    { name: 'lat', tensile: 80, peer: NaN, unit: 'us', on: 'ratio', target: { op: '<=', value: 0.5 } },
    'figure=lat tensile=80.000 peer=failed unit=us ratio=- target=<=0.5 met=no',
  ],
  [
    'no peer by design: the target is on the value',
    { name: 'operator_rss_peak', tensile: 211.04, unit: 'MB', on: 'absolute', target: { op: '<=', value: 200 } },
    'figure=operator_rss_peak tensile=211.0 peer=- unit=MB ratio=- target=<=200 met=no',
  ],
  [
    'an absolute figure within its target',
    { name: 'scale_1000', tensile: 0.066, unit: 's', on: 'absolute', target: { op: '<=', value: 3 }, digits: 3 },
    'figure=scale_1000 tensile=0.066 peer=- unit=s ratio=- target=<=3 met=yes',
  ],
  [
    'a figure for information only',
    { name: 'reconcile_p50', tensile: 1.25, unit: 'ms', on: 'absolute' },
    'figure=reconcile_p50 tensile=1.250 peer=- unit=ms ratio=- target=- met=-',
  ],
  [
    'a tensile value that could not be measured',
    { name: 'rss_end', tensile: NaN, unit: 'MB', on: 'absolute', target: { op: '<=', value: 200 } },
    'figure=rss_end tensile=failed peer=- unit=MB ratio=- target=<=200 met=no',
  ],
];

for (const [what, input, line] of cases) {
  test(`figure line: ${what}`, () => {
    assert.equal(formatFigure(input), line);
    // Every line printed reads back field for field.
    const f = parseFigureLine(line);
    assert.equal(
      `figure=${f.name} tensile=${f.tensile} peer=${f.peer} unit=${f.unit} ratio=${f.ratio} target=${f.target} met=${f.met}`,
      line,
    );
  });
}

test('a figure name or unit with spaces is refused, naming it', () => {
  assert.throws(
    () => formatFigure({ name: 'a b', tensile: 1, unit: 's', on: 'absolute' }),
    /figure name "a b" must match/,
  );
  assert.throws(
    () => formatFigure({ name: 'a', tensile: 1, unit: 'GB s', on: 'absolute' }),
    /unit "GB s" must be one word/,
  );
});

test('--repeats takes a positive integer and names a bad one', () => {
  assert.equal(repeatsFromArgv(3, ['node', 'run.ts']), 3);
  assert.equal(repeatsFromArgv(3, ['node', 'run.ts', '--repeats', '5']), 5);
  assert.throws(
    () => repeatsFromArgv(3, ['node', 'run.ts', '--repeats', 'two']),
    /--repeats "two": expected a positive integer/,
  );
  assert.throws(() => repeatsFromArgv(3, ['node', 'run.ts', '--repeats', '0']), /--repeats "0"/);
  assert.throws(() => repeatsFromArgv(3, ['node', 'run.ts', '--repeats']), /--repeats \(missing\)/);
});
