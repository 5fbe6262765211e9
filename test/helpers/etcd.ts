// Test harness: a throwaway etcd (Debian's /usr/bin/etcd) on free loopback ports with a temp data dir.
//
//   const etcd = await startEtcd();          // resolves once etcd serves clients (bounded by readyTimeoutMs)
//   t.after(() => etcd.stop());              // SIGTERM, then SIGKILL after 5 s; removes the data dir
//   etcd.endpoint                            // '127.0.0.1:<port>' for --rdzv-endpoint
//   await etcd.restart({ downMs: 500 })      // stop, wait, start again on the same ports and data dir
//   await etcd.kill()                        // SIGKILL (crash), keeps the data dir; start again with restart()
//
//   const suite = useEtcd();                 // in a describe: etcd started before its tests; after them the
//   suite.open.push(handler)                 //   handlers pushed here are closed, then etcd is stopped
//
// Options: `tls` (serve clients over TLS with a throwaway CA: `etcd.tls` has the PEM file paths), `extraArgs`
// (e.g. ['--enable-v2'] for torchrun's etcd-v2 backend), `readyTimeoutMs` (default 15 s).
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before } from 'node:test';
import { freePort } from '../../common/free-port.js';
import { makeTestCa, makeTestCert } from './tls.js';

export const ETCD_BIN = '/usr/bin/etcd';

export interface EtcdTlsFiles {
  readonly caCert: string;
  readonly clientCert: string;
  readonly clientKey: string;
  readonly serverCert: string;
  readonly serverKey: string;
}

export interface EtcdServer {
  /** `<clientHost>:<clientPort>`, 127.0.0.1 by default (use `https://` with `tls`). */
  readonly endpoint: string;
  readonly clientPort: number;
  readonly peerPort: number;
  readonly dataDir: string;
  readonly tls: EtcdTlsFiles | null;
  /** PID of the running etcd, or null while stopped. */
  pid(): number | null;
  /** Stops etcd (SIGTERM, SIGKILL after 5 s) and removes its data dir. Idempotent. */
  stop(): Promise<void>;
  /** Crash-stops etcd with SIGKILL, keeping its data dir. */
  kill(): Promise<void>;
  /** Stops etcd (if running), waits `downMs`, and starts it again on the same ports and data dir. */
  restart(options?: { downMs?: number }): Promise<void>;
}

export interface StartEtcdOptions {
  readonly tls?: boolean;
  /** Address etcd serves clients on (default 127.0.0.1), e.g. a bridge address reachable from test namespaces. */
  readonly clientHost?: string;
  readonly extraArgs?: readonly string[];
  readonly readyTimeoutMs?: number;
}

function makeTls(dir: string): EtcdTlsFiles {
  const ca = makeTestCa(dir);
  const server = makeTestCert(dir, ca, 'server', '127.0.0.1');
  const client = makeTestCert(dir, ca, 'client', 'tensile-client');
  return {
    caCert: ca.cert,
    clientCert: client.cert,
    clientKey: client.key,
    serverCert: server.cert,
    serverKey: server.key,
  };
}

/** Starts etcd and resolves once it serves clients. Rejects (and cleans up) if it does not within readyTimeoutMs. */
export async function startEtcd(options: StartEtcdOptions = {}): Promise<EtcdServer> {
  const root = mkdtempSync(join(tmpdir(), 'tensile-etcd-'));
  const dataDir = join(root, 'data');
  const tls = options.tls ? makeTls(root) : null;
  const clientPort = await freePort();
  const peerPort = await freePort();
  const scheme = tls ? 'https' : 'http';
  const clientHost = options.clientHost ?? '127.0.0.1';
  const clientUrl = `${scheme}://${clientHost}:${clientPort}`;
  const peerUrl = `http://127.0.0.1:${peerPort}`;
  const args = [
    '--name',
    'tensile-test',
    '--data-dir',
    dataDir,
    '--listen-client-urls',
    clientUrl,
    '--advertise-client-urls',
    clientUrl,
    '--listen-peer-urls',
    peerUrl,
    '--initial-advertise-peer-urls',
    peerUrl,
    '--initial-cluster',
    `tensile-test=${peerUrl}`,
    '--initial-cluster-state',
    'new',
    '--log-level',
    'warn',
    '--logger',
    'zap',
    ...(tls
      ? [
          '--cert-file',
          tls.serverCert,
          '--key-file',
          tls.serverKey,
          '--trusted-ca-file',
          tls.caCert,
          '--client-cert-auth',
        ]
      : []),
    ...(options.extraArgs ?? []),
  ];
  const readyTimeoutMs = options.readyTimeoutMs ?? 15_000;
  let child: ChildProcess | null = null;
  let stderrTail = '';

  const launch = async (): Promise<void> => {
    stderrTail = '';
    const c = spawn(ETCD_BIN, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    child = c;
    c.stderr?.setEncoding('utf8');
    c.stderr?.on('data', (d: string) => {
      stderrTail = (stderrTail + d).slice(-4000);
    });
    await waitReady(c);
  };

  const waitReady = async (c: ChildProcess): Promise<void> => {
    const deadline = Date.now() + readyTimeoutMs;
    let exited = false;
    c.once('exit', () => {
      exited = true;
    });
    while (Date.now() < deadline) {
      if (exited) throw new Error(`etcd exited during start-up: ${stderrTail}`);
      if (await healthy()) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`etcd did not become healthy within ${readyTimeoutMs} ms: ${stderrTail}`);
  };

  const healthy = async (): Promise<boolean> => {
    try {
      if (tls) {
        execFileSync(
          '/usr/bin/etcdctl',
          [
            '--endpoints',
            clientUrl,
            '--cacert',
            tls.caCert,
            '--cert',
            tls.clientCert,
            '--key',
            tls.clientKey,
            '--command-timeout=1s',
            'endpoint',
            'health',
          ],
          { stdio: 'ignore', timeout: 3000, env: { ...process.env, ETCDCTL_API: '3' } },
        );
        return true;
      }
      const res = await fetch(`${clientUrl}/health`, { signal: AbortSignal.timeout(1000) });
      const body = (await res.json()) as { health?: string };
      return body.health === 'true';
    } catch {
      return false;
    }
  };

  const halt = async (signal: NodeJS.Signals): Promise<void> => {
    const c = child;
    child = null;
    if (c === null || c.exitCode !== null || c.signalCode !== null) return;
    const exited = new Promise<void>((r) => c.once('exit', () => r()));
    c.kill(signal);
    const t = setTimeout(() => c.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(t);
  };

  let removed = false;
  const server: EtcdServer = {
    endpoint: `${clientHost}:${clientPort}`,
    clientPort,
    peerPort,
    dataDir,
    tls,
    pid: () => child?.pid ?? null,
    stop: async () => {
      await halt('SIGTERM');
      if (!removed) {
        removed = true;
        rmSync(root, { recursive: true, force: true });
      }
    },
    kill: () => halt('SIGKILL'),
    restart: async ({ downMs = 0 } = {}) => {
      await halt('SIGTERM');
      if (downMs > 0) await new Promise((r) => setTimeout(r, downMs));
      await launch();
    },
  };
  try {
    await launch();
  } catch (err) {
    await server.stop();
    throw err;
  }
  return server;
}

/** What `useEtcd` gives a suite. */
export interface EtcdSuite {
  /** The suite's etcd; reading it before the suite's `before` hook ran throws. */
  readonly etcd: EtcdServer;
  /** Rendezvous handlers (or anything closable) to close after the suite's tests, before etcd stops. */
  readonly open: { close(): Promise<unknown> }[];
}

/**
 * Registers `before`/`after` hooks in the calling suite (or file): etcd started with `options` before its tests;
 * after them, even when a test failed, every handler pushed on `open` is closed, then etcd is stopped.
 */
export function useEtcd(options: StartEtcdOptions = {}): EtcdSuite {
  let etcd: EtcdServer | undefined;
  const open: { close(): Promise<unknown> }[] = [];
  before(async () => {
    etcd = await startEtcd(options);
  });
  after(async () => {
    await Promise.allSettled(open.map((h) => h.close()));
    await etcd?.stop();
  });
  return {
    get etcd(): EtcdServer {
      if (!etcd) throw new Error('useEtcd: etcd is not started yet (read it in a test or hook of the suite)');
      return etcd;
    },
    open,
  };
}
