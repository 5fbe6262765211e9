// mapStackText (collective/js-stacks.ts): the stack dumper's reply made readable. Table-driven, pure: frames of a
// script with an inline source map get their original position (the generated one kept in brackets); frames without
// a usable map stay as they are; the `source-map` lines never reach the reader. Also the dumper's socket names.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { installStackDumper, mapStackText, stackScopeOf, stackSocketName } from '../../../collective/js-stacks.js';

// Generated line 1: column 0 maps to src/a.ts 1:1, column 10 to src/a.ts 9:3 (VLQ "AAAA,UAQE").
const MAP = { version: 3, sources: ['/src/a.ts'], names: [], mappings: 'AAAA,UAQE' };
const BASE64 = `data:application/json;base64,${Buffer.from(JSON.stringify(MAP)).toString('base64')}`;
const URI = `data:application/json;charset=utf-8,${encodeURIComponent(JSON.stringify(MAP))}`;
const HEAD = 'JavaScript stack of pid 7 (main thread, taken by a V8 interrupt while it ran JavaScript; 2 frames):';
const TIMERS = '    at listOnTimeout (node:internal/timers:581:17)';

const cases: Array<{ name: string; raw: string[]; want: string[] }> = [
  {
    name: 'a base64 inline map gives the original file, line and column',
    raw: [HEAD, '    at spin (file:///gen/a.js:1:13)', TIMERS, `source-map\tfile:///gen/a.js\t${BASE64}`, ''],
    want: [HEAD, '    at spin (/src/a.ts:9:3) [generated 1:13]', TIMERS, ''],
  },
  {
    name: 'a URI-encoded inline map too, and constructor and eval frames keep their words',
    raw: [HEAD, '    at new K (eval at file:///gen/a.js:1:1)', `source-map\tfile:///gen/a.js\t${URI}`],
    want: [HEAD, '    at new K (eval at /src/a.ts:1:1) [generated 1:1]'],
  },
  {
    name: 'a script without a source-map line is left alone',
    raw: [HEAD, '    at spin (/plain/b.js:3:9)', TIMERS, ''],
    want: [HEAD, '    at spin (/plain/b.js:3:9)', TIMERS, ''],
  },
  {
    name: 'a map that is a file URL (not inline) leaves the frame as it is; the line is dropped',
    raw: [HEAD, '    at spin (file:///gen/a.js:1:13)', 'source-map\tfile:///gen/a.js\ta.js.map', ''],
    want: [HEAD, '    at spin (file:///gen/a.js:1:13)', ''],
  },
  {
    name: 'a malformed inline map leaves the frame as it is',
    raw: [
      HEAD,
      '    at spin (file:///gen/a.js:1:13)',
      'source-map\tfile:///gen/a.js\tdata:application/json;base64,e30K!!',
    ],
    want: [HEAD, '    at spin (file:///gen/a.js:1:13)'],
  },
  {
    name: 'a script name with spaces and colons still parses (the position is the last two numbers)',
    raw: [HEAD, '    at f (file:///my dir/x:y.js:1:11)', `source-map\tfile:///my dir/x:y.js\t${BASE64}`],
    want: [HEAD, '    at f (/src/a.ts:9:3) [generated 1:11]'],
  },
];

describe('mapStackText', () => {
  for (const c of cases)
    test(c.name, () => {
      assert.equal(mapStackText(c.raw.join('\n')), c.want.join('\n'));
    });
});

describe('stack dumper names', () => {
  test('the scope is the control-socket directory, made safe for a socket name', () => {
    const table: Array<[string, string]> = [
      ['/tmp/tensile-ctl-AbC123/0.sock', 'tensile-ctl-AbC123'],
      ['/var/run/my dir:1/3.sock', 'my_dir_1'],
      ['0.sock', '.'],
      [`/t/${'x'.repeat(80)}/0.sock`, 'x'.repeat(64)],
    ];
    for (const [path, scope] of table) assert.equal(stackScopeOf(path), scope, path);
    assert.equal(stackSocketName(42), 'tensile-stacks.42');
    assert.equal(stackSocketName(42, 'tensile-ctl-AbC123'), 'tensile-stacks.42.tensile-ctl-AbC123');
  });

  test('a bad scope is refused before anything starts, quoting it', () => {
    for (const scope of ['', 'a b', 'x'.repeat(65), 'ü'])
      assert.deepEqual(installStackDumper({ scope }), {
        ok: false,
        reason: `stack dumper scope ${JSON.stringify(scope)}: expected 1 to 64 of [A-Za-z0-9._-]`,
      });
  });
});
