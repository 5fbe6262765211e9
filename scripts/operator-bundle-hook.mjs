// Test-only module hook: `node --import tsx --import ./scripts/operator-bundle-hook.mjs --test ...` makes every
// import of operator/index.(ts|js) load the esbuild bundle named by $TENSILE_OPERATOR_BUNDLE (made by
// scripts/bundle-operator.mjs) instead of the sources, so the operator end-to-end tests run the code the image runs:
// `runOperator` then talks to the API server through the bundle's slimmed @kubernetes/client-node.
// Usage (run-tests.mjs does not pass extra --import flags, so call node directly):
//   node scripts/bundle-operator.mjs --out /tmp/op-bundle/index.js
//   TENSILE_OPERATOR_BUNDLE=/tmp/op-bundle/index.js node --import tsx --import ./scripts/operator-bundle-hook.mjs \
//     --test --test-concurrency=2 test/e2e/operator/*.test.ts
import { register } from 'node:module';
import { pathToFileURL } from 'node:url';

const bundle = process.env.TENSILE_OPERATOR_BUNDLE;
if (bundle === undefined || bundle === '')
  throw new Error('operator-bundle-hook: set TENSILE_OPERATOR_BUNDLE to the bundle file');
const target = pathToFileURL(bundle).href;
const source = `
export async function resolve(specifier, context, next) {
  const r = await next(specifier, context);
  if (/\\/operator\\/index\\.(ts|js)$/.test(new URL(r.url).pathname) && !r.url.startsWith(${JSON.stringify(target)}))
    return { url: ${JSON.stringify(target)}, shortCircuit: true, format: 'module' };
  return r;
}`;
register(`data:text/javascript,${encodeURIComponent(source)}`);
console.error(`operator-bundle-hook: operator/index from ${bundle}`);
