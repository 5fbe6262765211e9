import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import {
  type NodeDescriptor,
  type RendezvousConfig,
  RendezvousConfigError,
  RendezvousConnectionError,
  type RoundInfo,
} from '../../../rendezvous/api.js';
import { createEtcdRendezvousHandler } from '../../../rendezvous/etcd-backend.js';
import { createRendezvousHandler, parseRdzvConf } from '../../../rendezvous/index.js';
import { freePort } from '../../../common/free-port.js';
import { type EtcdServer, startEtcd, useEtcd } from '../../helpers/etcd.js';
import { EventLog, runRendezvousContract, type SpawnedMember, self, within } from './contract.js';

const MEMBER_PROCESS = new URL('./member-process.ts', import.meta.url).pathname;

/** A member in its own process (member-process.ts): killed with SIGKILL, stalled with SIGSTOP. */
function spawnEtcdMember(endpoint: string, config: RendezvousConfig, self: NodeDescriptor): SpawnedMember {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', MEMBER_PROCESS, JSON.stringify({ endpoint, config, self })],
    {
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const round = new Promise<RoundInfo>((resolve, reject) => {
    let buf = '';
    child.stdout.on('data', (d: Buffer) => {
      buf += d.toString();
      const nl = buf.indexOf('\n');
      if (nl >= 0) resolve(JSON.parse(buf.slice(0, nl)) as RoundInfo);
    });
    child.once('exit', (code, signal) =>
      reject(new Error(`member process exited (${code ?? signal}) before its round`)),
    );
  });
  round.catch(() => {});
  return {
    nodeId: self.nodeId,
    round,
    kill: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
    stall: { stop: () => child.kill('SIGSTOP'), resume: () => child.kill('SIGCONT') },
  };
}

runRendezvousContract(
  'etcd',
  async () => {
    const etcd = await startEtcd();
    return {
      create: (config, self) =>
        createEtcdRendezvousHandler({ config, self, backendOptions: { endpoint: etcd.endpoint, conf: {} } }),
      spawnMember: async (config, self) => spawnEtcdMember(etcd.endpoint, config, self),
      dispose: () => etcd.stop(),
    };
  },
  { leaseTtlMs: 2000 },
);

describe('etcd backend: outages and bad settings', () => {
  const suite = useEtcd();

  /** A fresh two-node job on `etcd` with rdzv `conf`: both handlers (closed after the suite), through round 0. */
  async function twoNodesInRound0(runPrefix: string, conf: Record<string, string>) {
    const { config, backendOptions } = parseRdzvConf(conf, {
      runId: `${runPrefix}-${randomUUID().slice(0, 8)}`,
      minNodes: 2,
      maxNodes: 2,
      endpoint: suite.etcd.endpoint,
    });
    const hs = [
      await createRendezvousHandler('etcd', { config, backendOptions, self: self('a') }),
      await createRendezvousHandler('etcd', { config, backendOptions, self: self('b') }),
    ];
    suite.open.push(...hs);
    const r0 = await within(Promise.all(hs.map((h) => h.next())), 15_000, 'round 0');
    return { hs, r0, logs: hs.map((h) => new EventLog(h)) };
  }

  test('an etcd restart shorter than the lease TTL emits connection events but does not end the round', async () => {
    // A TTL well above the restart time (down 1 s, then etcd's start-up): a longer outage fences the members (below).
    const { hs, r0, logs } = await twoNodesInRound0('o', {
      last_call_timeout: '0.2',
      outage_timeout: '30',
      lease_ttl: '8',
    });
    await suite.etcd.restart({ downMs: 1000 });
    for (const log of logs) await log.waitFor((e) => e.type === 'connection-restored', 20_000, 'connection-restored');
    // Give a (wrong) member-lost time to show up: one lease TTL and a bit.
    await new Promise((r) => setTimeout(r, 9000));
    for (const log of logs) {
      assert.ok(log.types().includes('connection-lost'), `events: ${log.types().join(', ')}`);
      assert.ok(!log.types().some((t) => t.startsWith('round-ended')), `events: ${log.types().join(', ')}`);
    }
    // The job still works: a failure moves both to round 1 with the same ranks.
    await hs[0]!.endRound({ reason: 'failure' });
    const r1 = await within(Promise.all(hs.map((h) => h.next())), 15_000, 'round 1');
    assert.deepEqual(
      r1.map((r) => [r.round, r.groupRank]),
      r0.map((r) => [1, r.groupRank]),
    );
  });

  test('an etcd outage longer than the lease TTL stops every member (fencing), and the job resumes in the next round when etcd is back', async () => {
    const { hs, r0, logs } = await twoNodesInRound0('f', {
      last_call_timeout: '0.2',
      outage_timeout: '60',
      lease_ttl: '2',
    });
    await suite.etcd.kill();
    try {
      // Nobody can tell an etcd outage from being cut off: each member leaves its round on its own.
      for (const [i, log] of logs.entries()) {
        const e = await log.waitFor((e) => e.type === 'round-ended', 15_000, 'fenced');
        assert.deepEqual(e.type === 'round-ended' && [e.round, e.reason, e.byNodeId], [
          0,
          'member-lost',
          hs[i]!.self.nodeId,
        ]);
      }
    } finally {
      await suite.etcd.restart();
    }
    // etcd kept the leases; the members end the round they left and meet again in round 1, ranks kept.
    const r1 = await within(Promise.all(hs.map((h) => h.next())), 30_000, 'round 1 after the outage');
    assert.deepEqual(
      r1.map((r) => [r.round, r.groupWorldSize, r.groupRank]),
      r0.map((r) => [1, 2, r.groupRank]),
    );
  });

  test('an etcd outage longer than outage_timeout ends in a terminal RendezvousConnectionError', async () => {
    const { config, backendOptions } = parseRdzvConf(
      { outage_timeout: '2', read_timeout: '1' },
      { runId: `l-${randomUUID().slice(0, 8)}`, minNodes: 1, maxNodes: 1, endpoint: suite.etcd.endpoint },
    );
    const h = await createRendezvousHandler('etcd', { config, backendOptions, self: self('l') });
    suite.open.push(h);
    await within(h.next(), 15_000, 'round 0');
    const log = new EventLog(h);
    await suite.etcd.kill();
    try {
      const e = await log.waitFor(
        (e) => e.type === 'connection-lost' && e.error instanceof RendezvousConnectionError,
        20_000,
        'terminal connection-lost',
      );
      assert.ok(e.type === 'connection-lost' && e.error.message.includes(suite.etcd.endpoint), JSON.stringify(e));
      await assert.rejects(h.next(), (err: unknown) => {
        assert.ok(err instanceof RendezvousConnectionError);
        assert.equal(err.terminal, true);
        assert.match(err.message, /unreachable for longer than the outage timeout \(2000 ms\)/);
        return true;
      });
    } finally {
      await suite.etcd.restart();
    }
  });

  test('a bad endpoint is a RendezvousConfigError quoting it', async () => {
    const { config } = parseRdzvConf({}, { runId: 'x', minNodes: 1, maxNodes: 1 });
    await assert.rejects(
      createRendezvousHandler('etcd', { config, backendOptions: { endpoint: 'localhost', conf: {} }, self: self('c') }),
      (err: unknown) => {
        assert.ok(err instanceof RendezvousConfigError);
        assert.match(err.message, /--rdzv-endpoint "localhost": "localhost" is not host:port/);
        return true;
      },
    );
  });

  test('an unreachable etcd is a RendezvousConnectionError naming the endpoint within the read timeout', async () => {
    const port = await freePort();
    const { config, backendOptions } = parseRdzvConf(
      { read_timeout: '1' },
      { runId: 'x', minNodes: 1, maxNodes: 1, endpoint: `127.0.0.1:${port}` },
    );
    await assert.rejects(
      within(createRendezvousHandler('etcd', { config, backendOptions, self: self('d') }), 15_000, 'unreachable error'),
      (err: unknown) => {
        assert.ok(err instanceof RendezvousConnectionError);
        assert.ok(err.message.includes(`127.0.0.1:${port}`), err.message);
        return true;
      },
    );
  });

  test('a missing TLS file is a RendezvousConfigError naming the file', async () => {
    const { config, backendOptions } = parseRdzvConf(
      { cacert: '/nonexistent/ca.pem' },
      { runId: 'x', minNodes: 1, maxNodes: 1, endpoint: suite.etcd.endpoint },
    );
    await assert.rejects(
      createRendezvousHandler('etcd', { config, backendOptions, self: self('e') }),
      (err: unknown) => {
        assert.ok(err instanceof RendezvousConfigError);
        assert.match(err.message, /cacert=\/nonexistent\/ca\.pem: cannot read the file \(ENOENT\)/);
        return true;
      },
    );
  });
});

describe('etcd backend over TLS', () => {
  const suite = useEtcd({ tls: true });

  test('a node forms a round over TLS with a client certificate', async () => {
    const tls = suite.etcd.tls!;
    const { config, backendOptions } = parseRdzvConf(
      { cacert: tls.caCert, cert: tls.clientCert, key: tls.clientKey },
      { runId: 'tls', minNodes: 1, maxNodes: 1, endpoint: suite.etcd.endpoint },
    );
    const h = await createRendezvousHandler('etcd', { config, backendOptions, self: self('t') });
    try {
      const r = await within(h.next(), 15_000, 'round over TLS');
      assert.equal(r.groupWorldSize, 1);
    } finally {
      await h.leave();
    }
  });

  test('a file that is not PEM is a RendezvousConfigError naming it', async () => {
    const { config, backendOptions } = parseRdzvConf(
      { cacert: '/etc/hostname' },
      { runId: 'x', minNodes: 1, maxNodes: 1, endpoint: suite.etcd.endpoint },
    );
    await assert.rejects(
      createRendezvousHandler('etcd', { config, backendOptions, self: self('p') }),
      /cacert=\/etc\/hostname: not a PEM file/,
    );
  });

  test('without the CA the TLS etcd is a RendezvousConnectionError', async () => {
    const { config, backendOptions } = parseRdzvConf(
      { read_timeout: '2' },
      { runId: 'x', minNodes: 1, maxNodes: 1, endpoint: suite.etcd.endpoint },
    );
    await assert.rejects(
      within(createRendezvousHandler('etcd', { config, backendOptions, self: self('q') }), 15_000, 'plain to TLS'),
      RendezvousConnectionError,
    );
  });
});

describe('etcd backend with user/password auth', () => {
  let etcd: EtcdServer;
  let dir: string;
  before(async () => {
    etcd = await startEtcd();
    dir = mkdtempSync(join(tmpdir(), 'tensile-auth-'));
    const ctl = (...args: string[]): void => {
      execFileSync('/usr/bin/etcdctl', ['--endpoints', etcd.endpoint, ...args], {
        stdio: 'ignore',
        timeout: 10_000,
        env: { ...process.env, ETCDCTL_API: '3' },
      });
    };
    ctl('user', 'add', 'root', '--new-user-password=s3cret-pw');
    ctl('user', 'grant-role', 'root', 'root');
    ctl('auth', 'enable');
  });
  after(async () => {
    await etcd?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('a password from a file authenticates, and a wrong one fails without echoing the password', async () => {
    const good = join(dir, 'pw');
    writeFileSync(good, 's3cret-pw\n');
    const ok = parseRdzvConf(
      { user: 'root', password_file: good },
      { runId: 'auth', minNodes: 1, maxNodes: 1, endpoint: etcd.endpoint },
    );
    const h = await createRendezvousHandler('etcd', { ...ok, self: self('u') });
    try {
      assert.equal((await within(h.next(), 15_000, 'round with auth')).groupWorldSize, 1);
    } finally {
      await h.leave();
    }
    process.env.TENSILE_TEST_BAD_PW = 'wrong-pw-value';
    const bad = parseRdzvConf(
      { user: 'root', password_env: 'TENSILE_TEST_BAD_PW', read_timeout: '2' },
      { runId: 'auth', minNodes: 1, maxNodes: 1, endpoint: etcd.endpoint },
    );
    await assert.rejects(
      within(createRendezvousHandler('etcd', { ...bad, self: self('w') }), 15_000, 'bad password'),
      (err: unknown) => {
        assert.ok(err instanceof RendezvousConnectionError, String(err));
        assert.ok(!err.message.includes('wrong-pw-value'));
        return true;
      },
    );
    delete process.env.TENSILE_TEST_BAD_PW;
  });
});
