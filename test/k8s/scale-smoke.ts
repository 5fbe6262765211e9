// Scale smoke check of the test API server (no peer exists, so this is not a bench/ figure):
//   node --import tsx test/k8s/scale-smoke.ts [pods=10000]
// Creates N unschedulable pods over HTTP in batches of 100, then times a full list, 100 label-selected lists,
// and 200 status patches; prints one line per figure and the process RSS. Bounded: stops the server at the end.
import { startTestApiServer } from './index.js';

async function main(): Promise<void> {
  const n = Number(process.argv[2] ?? 10000);
  const s = await startTestApiServer();
  try {
    const post = (path: string, body: unknown): Promise<Response> =>
      fetch(s.url + path, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify(body),
      });
    let t = Date.now();
    for (let b = 0; b < n; b += 100) {
      const batch = Array.from({ length: Math.min(100, n - b) }, (_, i) =>
        post('/api/v1/namespaces/default/pods', {
          metadata: { name: `p-${b + i}`, labels: { job: `j${(b + i) % 1000}` } },
          spec: { containers: [{ name: 'c', image: 'x' }] },
        }).then((r) => r.arrayBuffer()),
      );
      await Promise.all(batch);
    }
    console.log(`figure=create_pods pods=${n} ms=${Date.now() - t}`);
    t = Date.now();
    const list = (await (await fetch(`${s.url}/api/v1/namespaces/default/pods`)).json()) as { items: unknown[] };
    console.log(`figure=list_all items=${list.items.length} ms=${Date.now() - t}`);
    t = Date.now();
    for (let i = 0; i < 100; i++)
      await (await fetch(`${s.url}/api/v1/namespaces/default/pods?labelSelector=job%3Dj${i}`)).arrayBuffer();
    console.log(`figure=list_by_label count=100 ms=${Date.now() - t}`);
    t = Date.now();
    for (let i = 0; i < 200; i++)
      await (
        await fetch(`${s.url}/api/v1/namespaces/default/pods/p-${i}/status`, {
          method: 'PATCH',
          headers: { 'Content-Type': 'application/merge-patch+json' },
          body: JSON.stringify({ status: { phase: 'Running' } }),
        })
      ).arrayBuffer();
    console.log(`figure=status_patch count=200 ms=${Date.now() - t}`);
    console.log(`figure=rss mb=${Math.round(process.memoryUsage().rss / 1e6)}`);
  } finally {
    await s.stop();
  }
}

await main();
