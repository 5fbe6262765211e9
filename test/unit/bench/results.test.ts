// Saved figure lines (bench/results/<machine>.txt) and the README table rendered from them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  markers,
  mergeSection,
  parseFigureLine,
  parseResults,
  regionsIn,
  renderTable,
  replaceRegion,
} from '../../../bench/lib/results.mjs';

const LAUNCH = 'figure=launch_nproc1 tensile=0.744 peer=4.568 unit=s ratio=0.163 target=<=0.5 met=yes';
const RSS = 'figure=operator_rss_peak tensile=211.0 peer=- unit=MB ratio=- target=<=200 met=no';
const INFO = 'figure=reconcile_p50 tensile=1.250 peer=- unit=ms ratio=- target=- met=-';
const FAILED = 'figure=lat tensile=80.000 peer=failed unit=us ratio=- target=<=0.5 met=no';

test('lines that are not figure lines are refused with the reason and the line', () => {
  for (const [line, why] of [
    ['figure=x tensile=1 peer=2 unit=s ratio=0.5 target=<=1', /field 7 should be met=/],
    ['tensile=1 figure=x peer=2 unit=s ratio=0.5 target=<=1 met=yes', /field 1 should be figure=/],
    ['figure=x tensile= peer=2 unit=s ratio=0.5 target=<=1 met=yes', /field 2 should be tensile=/],
    ['figure=x tensile=1 peer=2 unit=s ratio=0.5 target=<1 met=yes', /target "<1" must be <op><number> or -/],
    ['figure=x tensile=1 peer=2 unit=s ratio=0.5 target=<=1 met=n/a', /met=n\/a must be yes, no or -/],
    ['figure=x tensile=1 peer=2 unit=s ratio=0.5 target=<=1 met=yes extra=1', /extra fields/],
  ] as const) {
    assert.throws(() => parseFigureLine(line), why, line);
  }
});

test('a run replaces its benchmark section and keeps the others, sorted by benchmark', () => {
  const first = mergeSection(undefined, 'rpc', '## rpc 2026-12-04T13:40:00Z load=15.0', [FAILED], ['# machine: dev']);
  assert.equal(first, `# machine: dev\n\n## rpc 2026-12-04T13:40:00Z load=15.0\n${FAILED}\n`);
  const second = mergeSection(first, 'launch', '## launch 2026-12-04T13:45:00Z load=9.0 args=--repeats 3', [LAUNCH]);
  const third = mergeSection(second, 'rpc', '## rpc 2026-12-04T14:00:00Z load=4.0', [INFO]);
  assert.equal(
    third,
    '# machine: dev\n\n' +
      `## launch 2026-12-04T13:45:00Z load=9.0 args=--repeats 3\n${LAUNCH}\n\n` +
      `## rpc 2026-12-04T14:00:00Z load=4.0\n${INFO}\n`,
  );
  const r = parseResults(third);
  assert.deepEqual([...r.sections.keys()], ['launch', 'rpc']);
  assert.equal(r.sections.get('launch')!.info, 'load=9.0 args=--repeats 3');
});

test('a results file with misplaced lines is refused with the line number', () => {
  assert.throws(() => parseResults(`${LAUNCH}\n`), /line 1: figure line before any section/);
  assert.throws(
    () => parseResults('## a 2026-12-04T00:00:00Z\n## a 2026-12-04T00:00:00Z\n'),
    /line 2: a second section for a/,
  );
  assert.throws(() => parseResults('## a 2026-12-04T00:00:00Z\nfigure=x\n'), /line 2: not a figure line/);
  assert.throws(() => mergeSection(undefined, 'a', '## b 2026', [LAUNCH]), /must start with "## a "/);
});

test('the table shows units, marks what is missed or failed, and tells ratio targets from absolute ones', () => {
  const r = parseResults(
    `# m\n## launch 2026-12-04T13:45:10Z load=9.0\n${LAUNCH}\n${FAILED}\n## operator-scale 2026-11-26T05:20:00Z load=2.1\n${RSS}\n${INFO}\n`,
  );
  assert.equal(
    renderTable(r),
    [
      '| run | figure | tensile | peer | ratio | target | met |',
      '|---|---|---|---|---|---|---|',
      '| `launch`, 2026-12-04 13:45 UTC, load=9.0 | launch_nproc1 | 0.744 s | 4.568 s | 0.163 | ≤ 0.5× peer | yes |',
      '|  | lat | 80.000 µs | **failed** | — | ≤ 0.5× peer | **no** |',
      '| `operator-scale`, 2026-11-26 05:20 UTC, load=2.1 | operator_rss_peak | 211.0 MB | — | — | ≤ 200 MB | **no** |',
      '|  | reconcile_p50 | 1.250 ms | — | — | — | — |',
    ].join('\n'),
  );
});

test('the README region is found by its markers and replaced whole', () => {
  const [open, close] = markers('dev');
  const doc = `# T\n\ntext\n${open}\nold table\n${close}\n\nafter\n`;
  assert.deepEqual(regionsIn(doc), ['dev']);
  assert.equal(replaceRegion(doc, 'dev', '| new |'), `# T\n\ntext\n${open}\n| new |\n${close}\n\nafter\n`);
  assert.throws(() => replaceRegion('# T\n', 'dev', 'x'), /no region for dev/);
});
