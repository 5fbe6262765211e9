// Bad input end to end: an ElasticJob whose command does not exist, or whose image cannot be pulled, fails with
// a condition and Events that say why, counted against backoffLimit as real failures (never as preemptions)
// instead of crash-looping or staying Pending without a word.
//
// The missing command runs on the simulated kubelet in process mode (spawn fails: exit code 127, reason
// StartError, as a container runtime reports it). Process mode has no images to pull, so the pull failure is the
// status a kubelet reports, written into the pods' status the way envtest-based tests inject conditions; the pods
// are kept off the kubelet's node by a nodeSelector.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { stringify } from 'yaml';
import { kubectl, waitFor } from '../../k8s/index.js';
import { elasticJob } from '../../helpers/elastic-job.js';
import { jobPods, jobView, useOperatorCluster } from './harness.js';

const c = useOperatorCluster({ crd: true, operator: { resyncMs: 5000 } });

/**
 * Waits (60 s) for job `name` to fail, polling every `pollMs` (calling `onPoll` first), and asserts it failed by
 * exceeding backoffLimit 2 with 3 or 4 real failures (both workers may fail within one reconcile) and no preemption.
 * Returns its Failed condition.
 */
async function failedPastBackoffLimit(name: string, pollMs: number, onPoll: () => void = () => {}) {
  const j = await waitFor(
    'job Failed',
    async () => {
      onPoll();
      const v = await jobView(c.http, name);
      return v?.state === 'Failed' ? v : undefined;
    },
    60_000,
    pollMs,
  );
  assert.equal(j.preemptions ?? 0, 0);
  assert.ok((j.failures ?? 0) >= 3, `failures ${j.failures}`);
  const failed = j.conditions.find((c) => c.type === 'Failed');
  assert.equal(failed?.reason, 'BackoffLimitExceeded');
  return failed;
}

function manifest(name: string, container: Record<string, unknown>, podSpec: Record<string, unknown> = {}): string {
  return stringify(
    elasticJob(name, { minReplicas: 1, maxReplicas: 2, backoffLimit: 2, replicas: 2, container, podSpec }),
  );
}

async function eventsOf(job: string): Promise<string> {
  const r = await kubectl(c.server, [
    'get',
    'events',
    '--field-selector',
    `involvedObject.name=${job}`,
    '-o',
    'jsonpath={range .items[*]}{.reason}: {.message}{"\\n"}{end}',
  ]);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout;
}

test('a command that does not exist in the image fails the job naming the cause, not as preemptions', async () => {
  const apply = await kubectl(c.server, ['apply', '-f', '-'], {
    stdin: manifest('typo', { image: 'tensile:test', command: ['/opt/tensile/bin/trian', '--epochs', '1'] }),
  });
  assert.equal(apply.code, 0, apply.stderr);
  const failed = await failedPastBackoffLimit('typo', 200);
  assert.match(
    failed?.message ?? '',
    /^[34] worker failures > backoffLimit \(2\); last: typo-worker-\d cannot start: /,
  );
  assert.match(failed?.message ?? '', /StartError \(exit code 127\)/);
  const events = await eventsOf('typo');
  assert.match(events, /WorkerCannotStart: typo-worker-\d cannot start: StartError \(exit code 127\).*ENOENT/);
  assert.doesNotMatch(events, /Preempted/);
});

test('an image that cannot be pulled fails the job after backoffLimit with ImagePullBackOff in its condition', async () => {
  const apply = await kubectl(c.server, ['apply', '-f', '-'], {
    stdin: manifest(
      'nopull',
      { image: 'registry.invalid/nope:1', command: ['sleep', '60'] },
      {
        nodeSelector: { 'tensile.test/pool': 'elsewhere' },
      },
    ),
  });
  assert.equal(apply.code, 0, apply.stderr);
  const pods = c.server.state.def('', 'pods');
  // The kubelet's report for a pod whose image cannot be pulled, written into each new pod of the job.
  const reported = new Set<string>();
  const report = () => {
    for (const p of c.server.state.list(pods, 'default')) {
      const labels = p.metadata.labels ?? {};
      if (labels['tensile.dev/job-name'] !== 'nopull' || reported.has(p.metadata.uid ?? '')) continue;
      if (p.metadata.deletionTimestamp !== undefined) continue;
      reported.add(p.metadata.uid ?? '');
      c.server.state.update(
        pods,
        'default',
        p.metadata.name ?? '',
        {
          ...p,
          status: {
            phase: 'Pending',
            containerStatuses: [
              {
                name: 'worker',
                image: 'registry.invalid/nope:1',
                imageID: '',
                ready: false,
                restartCount: 0,
                state: {
                  waiting: {
                    reason: 'ImagePullBackOff',
                    message: 'Back-off pulling image "registry.invalid/nope:1"',
                  },
                },
              },
            ],
          },
        },
        'status',
      );
    }
  };
  const failed = await failedPastBackoffLimit('nopull', 100, report);
  assert.match(
    failed?.message ?? '',
    /last: nopull-worker-\d cannot start: ImagePullBackOff: Back-off pulling image "registry.invalid\/nope:1"/,
  );
  const events = await eventsOf('nopull');
  assert.match(events, /WorkerCannotStart: nopull-worker-\d cannot start: ImagePullBackOff/);
  assert.doesNotMatch(events, /Preempted/);
  await waitFor('no pods left running', async () => (await jobPods(c.http, 'nopull')).size === 0, 30_000, 200);
});
