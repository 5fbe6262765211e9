// Pure parts of the test API server, table-driven: patches, selectors, schema validation, CEL, JSONPath.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { evalCel, parseCel } from '../../k8s/cel.js';
import { evalJsonPath } from '../../k8s/jsonpath.js';
import { jsonPatch, mergePatch, strategicMergePatch } from '../../k8s/patch.js';
import { parseFieldSelector, parseLabelSelector } from '../../k8s/selectors.js';
import { defaultAndPrune, validate } from '../../k8s/schema.js';
import type { KObject } from '../../k8s/api.js';

const obj = (labels: Record<string, string>, extra: Record<string, unknown> = {}): KObject => ({
  metadata: { name: 'o', labels },
  ...extra,
});

describe('test API server pure helpers', () => {
  it('matches equality and set-based label selectors like the real server', () => {
    const cases: Array<[string, Record<string, string>, boolean]> = [
      ['a=1', { a: '1' }, true],
      ['a==1,b!=2', { a: '1', b: '3' }, true],
      ['a!=1', {}, true],
      ['a in (1, 2)', { a: '2' }, true],
      ['a notin (1,2)', { a: '2' }, false],
      ['a notin (1,2)', {}, true],
      ['a,!b', { a: 'x' }, true],
      ['a,!b', { a: 'x', b: 'y' }, false],
    ];
    for (const [sel, labels, want] of cases)
      assert.equal(parseLabelSelector(sel)(obj(labels)), want, `${sel} on ${JSON.stringify(labels)}`);
    assert.throws(() => parseLabelSelector('a in ('), /invalid label selector/);
  });

  it('matches field selectors on dotted paths', () => {
    const pod = obj({}, { spec: { nodeName: 'n1' }, status: { phase: 'Running' } });
    assert.equal(parseFieldSelector('spec.nodeName=n1,status.phase!=Failed')(pod), true);
    assert.equal(parseFieldSelector('metadata.name=other')(pod), false);
  });

  it('applies merge, JSON and strategic merge patches', () => {
    assert.deepEqual(mergePatch({ a: 1, b: { c: 2, d: 3 } }, { b: { c: null, e: 4 } }), { a: 1, b: { d: 3, e: 4 } });
    assert.deepEqual(
      jsonPatch({ a: [1, 2] }, [
        { op: 'add', path: '/a/-', value: 3 },
        { op: 'replace', path: '/a/0', value: 0 },
        { op: 'remove', path: '/a/1' },
      ]),
      { a: [0, 3] },
    );
    assert.throws(() => jsonPatch({}, [{ op: 'test', path: '/x', value: 1 }]), /does not exist/);
    const pod = {
      spec: {
        containers: [
          { name: 'a', image: 'x', env: [{ name: 'A', value: '1' }] },
          { name: 'b', image: 'y' },
        ],
      },
    };
    const patched = strategicMergePatch(pod, {
      spec: {
        containers: [
          { name: 'a', env: [{ name: 'B', value: '2' }] },
          { name: 'b', $patch: 'delete' },
        ],
      },
    });
    assert.deepEqual(patched.spec.containers, [
      {
        name: 'a',
        image: 'x',
        env: [
          { name: 'A', value: '1' },
          { name: 'B', value: '2' },
        ],
      },
    ]);
    assert.deepEqual(
      strategicMergePatch({ metadata: { finalizers: ['a'] } }, { metadata: { finalizers: ['b'] } }).metadata.finalizers,
      ['a', 'b'],
    );
  });

  it('validates, defaults and prunes against a structural schema with field-named causes', () => {
    const schema = {
      type: 'object',
      required: ['n'],
      properties: {
        n: { type: 'integer', minimum: 1 },
        s: { type: 'string', enum: ['a'] },
        d: { type: 'string', default: 'x' },
      },
    };
    const v: Record<string, unknown> = { n: 0, s: 'b', junk: 1 };
    const pruned: string[] = [];
    defaultAndPrune(v, schema, false, 'spec', pruned);
    assert.deepEqual(v, { n: 0, s: 'b', d: 'x' });
    assert.deepEqual(pruned, ['spec.junk']);
    const causes = validate(v, schema, 'spec');
    assert.deepEqual(
      causes.map((c) => c.field),
      ['spec.n', 'spec.s'],
    );
    assert.deepEqual(
      validate({}, schema, 'spec').map((c) => `${c.field}: ${c.message}`),
      ['spec.n: Required value'],
    );
    assert.match(
      validate('x', { type: 'integer' }, 'spec.r')[0].message,
      /^Invalid value: "string": spec\.r in body must be of type integer: "string"$/,
    );
  });

  it('evaluates the CEL subset used by CRD validation rules', () => {
    const cases: Array<[string, unknown, unknown]> = [
      ['!has(self.min) || !has(self.max) || self.min <= self.max', { min: 1, max: 2 }, true],
      ['!has(self.min) || !has(self.max) || self.min <= self.max', { min: 3, max: 2 }, false],
      ['!has(self.min) || self.min > 0', {}, true],
      ['self.items.all(x, x > 0) && size(self.items) == 2', { items: [1, 2] }, true],
      ["self.name.startsWith('w') ? self.n == 1 : true", { name: 'w1', n: 2 }, false],
      ["'a' in self.tags", { tags: ['a'] }, true],
    ];
    for (const [rule, self, want] of cases) assert.equal(evalCel(parseCel(rule), { self }), want, rule);
    assert.throws(() => evalCel(parseCel('self.missing == 1'), { self: {} }), /no such key: missing/);
  });

  it('evaluates printer-column JSONPath with filters', () => {
    const o = {
      status: {
        conditions: [
          { type: 'A', status: 'False' },
          { type: 'B', status: 'True' },
        ],
      },
      spec: { r: [{ n: 1 }, { n: 2 }] },
    };
    assert.deepEqual(evalJsonPath(o, '.status.conditions[?(@.status=="True")].type'), ['B']);
    assert.deepEqual(evalJsonPath(o, '.spec.r[*].n'), [1, 2]);
    assert.deepEqual(evalJsonPath(o, '.spec.r[-1].n'), [2]);
    assert.deepEqual(evalJsonPath(o, '.nope.x'), []);
  });
});
