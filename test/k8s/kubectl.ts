// Test helpers: run the real kubectl against a test API server, and poll for a condition.
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import type { TestApiServer } from './server.js';

export interface KubectlResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs `kubectl --kubeconfig <server> ...args` asynchronously (the server runs in this process, so a
 * synchronous exec would deadlock). Uses a discovery cache dir inside server.dir, so CRDs registered
 * during a test are seen. Never throws for a non-zero exit; times out after timeoutMs (default 30 s).
 */
export function kubectl(
  server: TestApiServer,
  args: string[],
  opts: { stdin?: string; timeoutMs?: number; kubectlPath?: string } = {},
): Promise<KubectlResult> {
  const cacheDir = join(server.dir, 'kubectl-cache');
  return new Promise((resolve) => {
    const child = execFile(
      opts.kubectlPath ?? 'kubectl',
      ['--kubeconfig', server.kubeconfigPath, '--cache-dir', cacheDir, ...args],
      {
        env: { ...process.env, KUBECONFIG: server.kubeconfigPath },
        timeout: opts.timeoutMs ?? 30_000,
        killSignal: 'SIGKILL',
      },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
        resolve({ code, stdout: String(stdout), stderr: String(stderr) });
      },
    );
    if (opts.stdin !== undefined) child.stdin?.end(opts.stdin);
    else child.stdin?.end();
  });
}

/** Polls fn every intervalMs until it returns a truthy value; throws with `what` after timeoutMs. */
export async function waitFor<T>(
  what: string,
  fn: () => T | undefined | null | false | Promise<T | undefined | null | false>,
  timeoutMs = 10_000,
  intervalMs = 25,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastErr: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (err) {
      lastErr = err;
    }
    if (Date.now() > deadline)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastErr ? `: ${String(lastErr)}` : ''}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
