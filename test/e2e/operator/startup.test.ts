// The operator starts before its CRD is installed (a common install order): it keeps retrying, and reconciles once
// the CRD appears.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { stringify } from 'yaml';
import { kubectl, waitFor } from '../../k8s/index.js';
import { elasticJob } from '../../helpers/elastic-job.js';
import { CRD_PATH, jobPods, startTestOperator, useOperatorCluster } from './harness.js';

const c = useOperatorCluster();

test('an operator started before the CRD exists reconciles once the CRD is applied', { timeout: 60_000 }, async () => {
  const op = (c.op = await startTestOperator(c.server));
  const readyz = async () => (await fetch(`http://127.0.0.1:${op.metricsPort}/readyz`)).status;
  assert.equal(await readyz(), 503);
  assert.equal((await kubectl(c.server, ['apply', '-f', CRD_PATH])).code, 0);
  await waitFor('operator ready', async () => (await readyz()) === 200, 30_000, 100);
  const job = elasticJob('late', { replicas: 2, container: { image: 'x', command: ['sleep', '30'] } });
  assert.equal((await kubectl(c.server, ['apply', '-f', '-'], { stdin: stringify(job) })).code, 0);
  await waitFor('2 pods', async () => (await jobPods(c.http, 'late')).size === 2, 20_000, 100);
});
