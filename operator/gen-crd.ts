// Generates the ElasticJob CRD and the Helm chart's values.schema.json from the zod schemas.
// Usage: node --import tsx operator/gen-crd.ts [--check]
//   --check: exit 1 when a committed file differs from what would be generated (no writes).
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { generatedFiles } from './config/generated.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const check = process.argv.includes('--check');
let stale = 0;
for (const { path, text } of await generatedFiles()) {
  const abs = `${root}${path}`;
  let current: string;
  try {
    current = readFileSync(abs, 'utf8');
  } catch {
    current = '';
  }
  if (current === text) continue;
  if (check) {
    process.stderr.write(`gen-crd: ${path} is stale; run: node --import tsx operator/gen-crd.ts\n`);
    stale += 1;
  } else {
    writeFileSync(abs, text);
    process.stdout.write(`gen-crd: wrote ${path}\n`);
  }
}
process.exitCode = stale > 0 ? 1 : 0;
