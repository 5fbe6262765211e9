// The `etcd` backend: RendezvousKv on etcd v3 through the `etcd3` client. One lease per handler with keepalive,
// one prefix watch per job and connection (shared by every handler on that connection), transactions comparing
// mod revisions. The round logic itself lives in kv-handler.ts, shared with the embedded backend.
import { readFileSync } from 'node:fs';
import { ExponentialBackoff, type IBackoff, noop } from 'cockatiel';
import { Etcd3, type IOptions, type Lease, type Watcher } from 'etcd3';
import { Backoff } from '../common/backoff.js';
import { noopLogger, type Logger } from '../common/logger.js';
import { withTimeout } from '../common/timeout.js';
import {
  type BackendOptions,
  type NodeDescriptor,
  type RendezvousConfig,
  type RendezvousHandler,
  RendezvousConfigError,
  RendezvousConnectionError,
} from './api.js';
import {
  type KvConnectionEvent,
  type KvEntry,
  type KvEvent,
  type KvStats,
  type KvSubscription,
  type KvTxn,
  type RendezvousKv,
  newKvStats,
} from './kv.js';
import { KvRendezvousHandler } from './kv-handler.js';

const ENDPOINT_RE = /^(https?:\/\/)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/;

/** Parses `host:port[,host:port...]` (optionally with http:// or https://). Throws RendezvousConfigError. */
export function parseEtcdEndpoint(endpoint: string): { hosts: string[]; secure: boolean } {
  const parts = endpoint.split(',').map((p) => p.trim());
  const hosts: string[] = [];
  let secure = false;
  for (const part of parts) {
    const m = ENDPOINT_RE.exec(part);
    const port = m ? Number(m[3]) : 0;
    if (!m || port < 1 || port > 65535) {
      throw new RendezvousConfigError(
        `--rdzv-endpoint ${JSON.stringify(endpoint)}: ${JSON.stringify(part)} is not host:port; expected host:port[,host:port...] with a port in 1..65535`,
      );
    }
    if (m[1] === 'https://') secure = true;
    hosts.push(`${m[2]}:${port}`);
  }
  return { hosts, secure };
}

function readConfFile(key: string, path: string, pem: boolean): Buffer {
  let buf: Buffer;
  try {
    buf = readFileSync(path);
  } catch (err) {
    throw new RendezvousConfigError(
      `--rdzv-conf ${key}=${path}: cannot read the file (${(err as NodeJS.ErrnoException).code ?? String(err)})`,
      { cause: err },
    );
  }
  if (pem && !buf.toString('latin1').includes('-----BEGIN ')) {
    throw new RendezvousConfigError(`--rdzv-conf ${key}=${path}: not a PEM file (no "-----BEGIN" line)`);
  }
  return buf;
}

/** Builds etcd3 client options from the endpoint and the TLS/auth conf keys. Never puts a password in a message. */
export function etcdClientOptions(options: BackendOptions, readTimeoutMs: number): IOptions {
  if (!options.endpoint)
    throw new RendezvousConfigError('--rdzv-endpoint is required for the etcd backend (host:port)');
  const { hosts, secure } = parseEtcdEndpoint(options.endpoint);
  const conf = options.conf;
  const tls = conf.cacert !== undefined || conf.cert !== undefined;
  const out: IOptions = {
    hosts: hosts.map((h) => `${tls || secure ? 'https' : 'http'}://${h}`),
    dialTimeout: readTimeoutMs,
    // Reconnect fast after an etcd restart: leases survive it only if keepalives resume within one TTL.
    grpcOptions: { 'grpc.initial_reconnect_backoff_ms': 100, 'grpc.max_reconnect_backoff_ms': 1000 },
    // Unary calls get the read timeout; streams (watch, keepalive) live as long as the client.
    defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + readTimeoutMs }),
    // No circuit breaker: after an etcd restart, calls must go through at once (the handler does its own retries).
    faultHandling: {
      host: () => noop,
      global: noop,
      // etcd3 calls .next() on this: a backoff factory at run time, although its typings say IBackoff.
      watchBackoff: new ExponentialBackoff({ initialDelay: 100, maxDelay: 1000 }) as unknown as IBackoff<unknown>,
    },
  };
  if (tls) {
    const rootCertificate = conf.cacert !== undefined ? readConfFile('cacert', conf.cacert, true) : undefined;
    const certChain = conf.cert !== undefined ? readConfFile('cert', conf.cert, true) : undefined;
    const privateKey = conf.key !== undefined ? readConfFile('key', conf.key, true) : undefined;
    if (rootCertificate === undefined) {
      throw new RendezvousConfigError(
        '--rdzv-conf cert/key given without cacert: give cacert=<CA bundle> to verify etcd',
      );
    }
    out.credentials = { rootCertificate, certChain, privateKey };
  }
  if (conf.user !== undefined) {
    let password: string;
    if (conf.password_file !== undefined) {
      password = readConfFile('password_file', conf.password_file, false)
        .toString('utf8')
        .replace(/\r?\n$/, '');
    } else if (conf.password_env !== undefined) {
      const v = process.env[conf.password_env];
      if (v === undefined)
        throw new RendezvousConfigError(
          `--rdzv-conf password_env=${conf.password_env}: the environment variable is not set`,
        );
      password = v;
    } else {
      throw new RendezvousConfigError('--rdzv-conf user=... needs password_file=<path> or password_env=<VAR>');
    }
    out.auth = { username: conf.user, password };
  }
  return out;
}

/** Stops a lease's keepalive without revoking it (etcd3's close() is public at run time, private in its typings). */
function closeLease(lease: Lease): void {
  (lease as unknown as { close(): void }).close();
}

/** etcd reports "no lease" as lease 0. */
function leaseField(lease: string | undefined): { lease?: string } {
  return lease === undefined || lease === '0' ? {} : { lease };
}

interface Mirror {
  readonly entries: Map<string, KvEntry>;
  readonly subscribers: Set<(events: readonly KvEvent[]) => void>;
  ready: Promise<void>;
  watcher: Watcher | null;
}

/**
 * One etcd client and its prefix watches. Handlers created on one connection share a single watch per prefix, and
 * each watched value is parsed once for all of them (many simulated agents in one process stay cheap).
 */
export class EtcdConnection {
  readonly client: Etcd3;
  private readonly mirrors = new Map<string, Mirror>();
  private readonly connectionListeners = new Set<(e: KvConnectionEvent) => void>();
  private closed = false;

  constructor(
    readonly endpoint: string,
    options: IOptions,
    readonly readTimeoutMs: number,
  ) {
    this.client = new Etcd3(options);
  }

  /** Checks that etcd answers within the read timeout; throws RendezvousConnectionError naming the endpoint. */
  async check(): Promise<void> {
    try {
      await withTimeout(
        this.client.get('/tensile/v1/.ping').string(),
        this.readTimeoutMs,
        'etcd ping',
        () => new Error(`no answer within ${this.readTimeoutMs} ms`),
      );
    } catch (err) {
      throw this.connectionError(err);
    }
  }

  connectionError(err: unknown): RendezvousConnectionError {
    const msg = err instanceof Error ? err.message : String(err);
    return new RendezvousConnectionError(
      `etcd at ${this.endpoint} is unreachable or refused the request (read timeout ${this.readTimeoutMs} ms): ${msg}`,
      {
        cause: err,
      },
    );
  }

  /** @internal */
  listen(l: (e: KvConnectionEvent) => void): () => void {
    this.connectionListeners.add(l);
    return () => this.connectionListeners.delete(l);
  }

  async subscribe(prefix: string, onEvents: (events: readonly KvEvent[]) => void): Promise<KvSubscription> {
    let mirror = this.mirrors.get(prefix);
    if (mirror === undefined) {
      const m: Mirror = { entries: new Map(), subscribers: new Set(), ready: Promise.resolve(), watcher: null };
      m.ready = this.startMirror(prefix, m);
      this.mirrors.set(prefix, m);
      mirror = m;
      m.ready.catch(() => this.mirrors.delete(prefix));
    }
    await mirror.ready;
    const m = mirror;
    m.subscribers.add(onEvents);
    return {
      entries: [...m.entries.values()],
      unsubscribe: () => {
        m.subscribers.delete(onEvents);
        if (m.subscribers.size === 0 && this.mirrors.get(prefix) === m) {
          this.mirrors.delete(prefix);
          void m.watcher?.cancel().catch(() => {});
        }
      },
    };
  }

  private async startMirror(prefix: string, m: Mirror): Promise<void> {
    const res = await this.client.getAll().prefix(prefix).exec();
    for (const kv of res.kvs) {
      const key = kv.key.toString();
      m.entries.set(key, {
        key,
        value: kv.value.toString(),
        modRevision: Number(kv.mod_revision),
        ...leaseField(kv.lease),
      });
    }
    const watcher = await this.client
      .watch()
      .prefix(prefix)
      .startRevision(String(Number(res.header.revision) + 1))
      .create();
    m.watcher = watcher;
    watcher.on('data', (wr) => {
      if (wr.events.length === 0) return;
      const events: KvEvent[] = wr.events.map((e) => {
        const key = e.kv.key.toString();
        return {
          type: e.type === 'Put' ? 'put' : 'delete',
          key,
          value: e.type === 'Put' ? e.kv.value.toString() : '',
          modRevision: Number(e.kv.mod_revision),
          ...(e.type === 'Put' ? leaseField(e.kv.lease) : {}),
        };
      });
      for (const e of events) {
        if (e.type === 'put') m.entries.set(e.key, e);
        else m.entries.delete(e.key);
      }
      for (const s of [...m.subscribers]) s(events);
    });
    watcher.on('disconnected', (err) => {
      for (const l of this.connectionListeners) l({ type: 'lost', error: err });
    });
    watcher.on('error', () => {});
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const m of this.mirrors.values()) void m.watcher?.cancel().catch(() => {});
    this.mirrors.clear();
    this.client.close();
  }
}

/** RendezvousKv over an EtcdConnection: one lease (auto keepalive every TTL/3) per handler. */
export class EtcdKv implements RendezvousKv {
  readonly stats: KvStats = newKvStats();
  private lease: Lease | null = null;
  private ttlSec = 2;
  private lost = false;
  /** leaseConfirmedAtMs(); keepalivesSentAtMs: send times of the keep-alives not answered yet, oldest first. */
  private confirmedAtMs = 0;
  private readonly keepalivesSentAtMs: number[] = [];
  private closed = false;
  private regranting = false;
  private readonly listeners: ((e: KvConnectionEvent) => void)[] = [];
  private readonly unlisten: () => void;

  constructor(
    private readonly conn: EtcdConnection,
    private readonly ownsConnection: boolean,
    private readonly log: Logger,
  ) {
    this.unlisten = conn.listen((e) => this.signal(e));
  }

  get endpoint(): string {
    return this.conn.endpoint;
  }

  get source(): object {
    return this.conn;
  }

  leaseConfirmedAtMs(): number {
    return this.confirmedAtMs;
  }

  async grantLease(ttlMs: number): Promise<void> {
    this.ttlSec = Math.max(1, Math.ceil(ttlMs / 1000));
    const sentAtMs = performance.now();
    const lease = this.newLease();
    try {
      await withTimeout(
        lease.grant(),
        this.conn.readTimeoutMs,
        'etcd lease grant',
        () => new Error(`lease grant got no answer within ${this.conn.readTimeoutMs} ms`),
      );
    } catch (err) {
      closeLease(lease);
      throw this.conn.connectionError(err);
    }
    this.stats.leaseOps++;
    this.confirmedAtMs = sentAtMs;
    this.lease = lease;
  }

  private newLease(): Lease {
    const lease = this.conn.client.lease(this.ttlSec);
    lease.on('keepaliveFired', () => {
      if (lease === this.lease) this.keepalivesSentAtMs.push(performance.now());
    });
    lease.on('keepaliveFailed', (err) => {
      if (lease !== this.lease) return;
      this.keepalivesSentAtMs.length = 0; // the stream is torn down: those requests get no answer
      // etcd3 passes the error here although its typings say a keepalive response.
      this.signal({ type: 'lost', error: err as unknown as Error });
    });
    lease.on('keepaliveSucceeded', () => {
      if (lease !== this.lease) return;
      // Answers come in request order on the one keepalive stream: this one answers the oldest request sent.
      const sentAtMs = this.keepalivesSentAtMs.shift();
      if (sentAtMs !== undefined) this.confirmedAtMs = Math.max(this.confirmedAtMs, sentAtMs);
      if (this.lost) this.signal({ type: 'restored' });
    });
    lease.on('lost', (err) => {
      if (lease !== this.lease || this.closed) return;
      this.log.warn({ err: err.message, endpoint: this.endpoint }, 'rendezvous: etcd lease lost; taking a new one');
      this.signal({ type: 'lost', error: err });
      void this.regrant();
    });
    return lease;
  }

  private async regrant(): Promise<void> {
    if (this.regranting) return;
    this.regranting = true;
    const backoff = new Backoff({ initialMs: 100, multiplier: 2, maxMs: 1000, jitter: 0.2 });
    while (!this.closed) {
      const sentAtMs = performance.now(); // etcd3 sends the grant when the lease is created
      const lease = this.newLease();
      this.lease = lease;
      try {
        await lease.grant();
        this.confirmedAtMs = sentAtMs;
        this.stats.leaseOps++;
        this.regranting = false;
        this.signal({ type: 'lease-renewed' });
        this.signal({ type: 'restored' });
        return;
      } catch {
        closeLease(lease);
        await new Promise((r) => setTimeout(r, backoff.next()));
      }
    }
    this.regranting = false;
  }

  private signal(e: KvConnectionEvent): void {
    if (this.closed) return;
    if (e.type === 'lost') this.lost = true;
    if (e.type === 'restored') {
      if (!this.lost) return;
      this.lost = false;
    }
    for (const l of this.listeners) l(e);
  }

  async revokeLease(): Promise<void> {
    const lease = this.lease;
    this.lease = null;
    if (lease === null) return;
    try {
      await lease.revoke();
      this.stats.leaseOps++;
    } catch (err) {
      this.log.warn(
        { err: (err as Error).message, endpoint: this.endpoint },
        'rendezvous: lease revoke failed; it expires after its TTL',
      );
      closeLease(lease);
    }
  }

  async revokeLeaseOf(leaseId: string): Promise<void> {
    try {
      await this.conn.client.leaseClient.leaseRevoke({ ID: leaseId });
      this.stats.leaseOps++;
    } catch (err) {
      // Already expired or revoked by another survivor: the goal is reached.
      if (/lease not found/i.test((err as Error).message)) return;
      throw err;
    }
  }

  subscribe(prefix: string, onEvents: (events: readonly KvEvent[]) => void): Promise<KvSubscription> {
    return this.conn.subscribe(prefix, onEvents);
  }

  async txn(txn: KvTxn): Promise<boolean> {
    const c = this.conn.client;
    const leaseId = txn.puts.some((p) => p.leased) ? await this.leaseId() : undefined;
    const putOp = (p: KvTxn['puts'][number]) => {
      const b = c.put(p.key).value(p.value);
      return p.leased ? b.lease(leaseId!) : b;
    };
    if (txn.compares.length === 0 && txn.puts.length + txn.deletes.length === 1) {
      if (txn.puts.length === 1) await putOp(txn.puts[0]!);
      else await c.delete().key(txn.deletes[0]!).exec();
      this.stats.writes++;
      if (leaseId !== undefined) this.stats.lastLeasedPutAtMs = performance.now();
      return true;
    }
    const [first, ...rest] = txn.compares;
    if (first === undefined) throw new Error('rendezvous: a multi-operation transaction needs a compare');
    const builder = c.if(first.key, 'Mod', '==', first.modRevision);
    for (const cmp of rest) builder.and(cmp.key, 'Mod', '==', cmp.modRevision);
    builder.then(...txn.puts.map(putOp), ...txn.deletes.map((k) => c.delete().key(k)));
    const res = await builder.commit();
    if (res.succeeded) {
      this.stats.writes++;
      if (leaseId !== undefined) this.stats.lastLeasedPutAtMs = performance.now();
    } else this.stats.failedTxns++;
    return res.succeeded;
  }

  private async leaseId(): Promise<string> {
    const lease = this.lease;
    if (lease === null)
      throw new RendezvousConnectionError(`rendezvous: no etcd lease (at ${this.endpoint})`, { code: 'UNAVAILABLE' });
    return lease.grant();
  }

  onConnection(listener: (event: KvConnectionEvent) => void): void {
    this.listeners.push(listener);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.unlisten();
    if (this.lease) closeLease(this.lease);
    this.lease = null;
    if (this.ownsConnection) this.conn.close();
  }
}

export interface EtcdHandlerArgs {
  readonly config: RendezvousConfig;
  readonly self: NodeDescriptor;
  readonly backendOptions: BackendOptions;
  readonly logger?: Logger;
  /** Share one client and watch between handlers (benchmarks, tests); the handler then does not close it. */
  readonly connection?: EtcdConnection;
}

/** Opens a connection for `backendOptions` (validating endpoint, TLS files and auth) and checks etcd answers. */
export async function openEtcdConnection(
  backendOptions: BackendOptions,
  readTimeoutMs: number,
): Promise<EtcdConnection> {
  const conn = new EtcdConnection(
    backendOptions.endpoint,
    etcdClientOptions(backendOptions, readTimeoutMs),
    readTimeoutMs,
  );
  try {
    await conn.check();
  } catch (err) {
    conn.close();
    throw err;
  }
  return conn;
}

/** Creates an etcd handler; throws RendezvousConfigError (endpoint, TLS, auth) or RendezvousConnectionError. */
export async function createEtcdRendezvousHandler(
  args: EtcdHandlerArgs,
): Promise<RendezvousHandler & { readonly stats: KvStats }> {
  const log = args.logger ?? noopLogger;
  const conn = args.connection ?? (await openEtcdConnection(args.backendOptions, args.config.readTimeoutMs));
  const kv = new EtcdKv(conn, args.connection === undefined, log);
  const handler = new KvRendezvousHandler('etcd', args.config, args.self, kv, log);
  try {
    await handler.start();
  } catch (err) {
    await kv.close();
    throw err instanceof RendezvousConnectionError || err instanceof RendezvousConfigError
      ? err
      : conn.connectionError(err);
  }
  return handler;
}
