// List + watch into a local cache (what client-go calls a reflector + indexer), written for the operator on top of
// a `ListWatchSource` (in production: client-node's typed list calls and its `Watch`, see `sources.ts`).
// client-node's own `ListWatch` is not used: it stops for good on any watch error other than 410, does not ask
// for bookmarks, and has no secondary index. This one:
// - the first `start()` resolves after the initial list, so callers can wait for a synced cache;
// - a watch resumes from the last resourceVersion seen (BOOKMARKs included) when the server ends it;
// - 410 Gone (HTTP status or an ERROR event) or any other watch failure → relist after a jittered backoff, and the
//   relist diffs against the cache, so deletes missed while disconnected are still delivered;
// - `indexBy` keeps a secondary index (the operator indexes pods and services by their job) so a reconcile reads
//   a job's pods without scanning every pod.
import { Backoff } from '../../common/backoff.js';
import type { Logger } from '../api.js';
import { ApiError, noopLogger } from '../api.js';
import type { WatchEventType } from './client-node.js';

export interface KObj {
  apiVersion?: string;
  kind?: string;
  metadata?: {
    name?: string;
    namespace?: string;
    uid?: string;
    resourceVersion?: string;
    labels?: Record<string, string>;
    [k: string]: unknown;
  };
}

type Handler<T> = (obj: T) => void;

/** Where an informer lists and watches: one collection (a resource, maybe in one namespace). */
export interface ListWatchSource<T> {
  /** The collection's API path (for watches and logs), e.g. `/api/v1/namespaces/ns/pods`. */
  readonly path: string;
  list(labelSelector?: string): Promise<{ resourceVersion: string; items: T[] }>;
  /** Resolves when the server ends the watch or `signal` aborts; rejects on errors (410 → statusCode 410). */
  watch(
    query: Record<string, string | number | boolean | undefined>,
    onEvent: (type: WatchEventType, obj: unknown) => void,
    signal: AbortSignal,
  ): Promise<void>;
}

export interface InformerOptions<T> {
  readonly labelSelector?: string;
  readonly logger?: Logger;
  /** Secondary index key of an object (undefined: not indexed). */
  readonly indexBy?: (obj: T) => string | undefined;
  /** What to keep of each object (applied before caching and before handlers see it); default: all of it. */
  readonly transform?: (obj: T) => T;
  /** Server-side watch timeout; the informer rewatches from the last resourceVersion when it ends. */
  readonly watchTimeoutSeconds?: number;
}

const keyOf = (o: KObj) => `${o.metadata?.namespace ?? ''}/${o.metadata?.name ?? ''}`;

export class Informer<T extends KObj> {
  private readonly cache = new Map<string, T>();
  private readonly index = new Map<string, Set<string>>();
  private readonly handlers = { add: [] as Handler<T>[], update: [] as Handler<T>[], delete: [] as Handler<T>[] };
  private resourceVersion = '';
  private abort = new AbortController();
  private loop: Promise<void> | undefined;
  private readonly log: Logger;

  private readonly path: string;

  constructor(
    private readonly source: ListWatchSource<T>,
    private readonly o: InformerOptions<T> = {},
  ) {
    this.path = source.path;
    this.log = (o.logger ?? noopLogger).child({ informer: source.path });
  }

  on(event: 'add' | 'update' | 'delete', h: Handler<T>): void {
    this.handlers[event].push(h);
  }

  /** Lists, then watches in the background. Resolves after the first list; rejects if it fails. */
  async start(): Promise<void> {
    this.abort = new AbortController();
    await this.relist();
    this.loop = this.run(this.abort.signal);
  }

  async stop(): Promise<void> {
    this.abort.abort();
    await this.loop;
  }

  get(name: string, namespace = ''): T | undefined {
    return this.cache.get(`${namespace}/${name}`);
  }

  list(): T[] {
    return [...this.cache.values()];
  }

  byIndex(key: string): T[] {
    const keys = this.index.get(key);
    if (keys === undefined) return [];
    const out: T[] = [];
    for (const k of keys) {
      const o = this.cache.get(k);
      if (o !== undefined) out.push(o);
    }
    return out;
  }

  get size(): number {
    return this.cache.size;
  }

  private slim(obj: T): T {
    return this.o.transform !== undefined ? this.o.transform(obj) : obj;
  }

  private put(obj: T): void {
    const k = keyOf(obj);
    const old = this.cache.get(k);
    if (old !== undefined) this.unindex(k, old);
    this.cache.set(k, obj);
    const ik = this.o.indexBy?.(obj);
    if (ik !== undefined) {
      let set = this.index.get(ik);
      if (set === undefined) {
        set = new Set();
        this.index.set(ik, set);
      }
      set.add(k);
    }
    for (const h of old === undefined ? this.handlers.add : this.handlers.update) h(obj);
  }

  private remove(obj: T): void {
    const k = keyOf(obj);
    const old = this.cache.get(k);
    if (old === undefined) return;
    this.unindex(k, old);
    this.cache.delete(k);
    for (const h of this.handlers.delete) h(obj);
  }

  private unindex(k: string, obj: T): void {
    const ik = this.o.indexBy?.(obj);
    if (ik === undefined) return;
    const set = this.index.get(ik);
    set?.delete(k);
    if (set !== undefined && set.size === 0) this.index.delete(ik);
  }

  private async relist(): Promise<void> {
    const list = await this.source.list(this.o.labelSelector);
    const seen = new Set<string>();
    for (const raw of list.items) {
      const item = this.slim(raw);
      seen.add(keyOf(item));
      const old = this.cache.get(keyOf(item));
      if (old === undefined || old.metadata?.resourceVersion !== item.metadata?.resourceVersion) this.put(item);
    }
    for (const [k, obj] of [...this.cache]) if (!seen.has(k)) this.remove(obj);
    this.resourceVersion = list.resourceVersion;
  }

  private async run(signal: AbortSignal): Promise<void> {
    const backoff = new Backoff({ initialMs: 250, multiplier: 2, maxMs: 30_000, jitter: 0.5 });
    while (!signal.aborted) {
      try {
        let gone = false;
        await this.source.watch(
          {
            labelSelector: this.o.labelSelector,
            resourceVersion: this.resourceVersion,
            allowWatchBookmarks: true,
            timeoutSeconds: this.o.watchTimeoutSeconds ?? 300,
          },
          (type: WatchEventType, obj: unknown) => {
            if (type === 'ERROR') {
              const code = (obj as { code?: number }).code;
              if (code === 410) gone = true;
              throw new ApiError(
                `watch ${this.path}: ${(obj as { message?: string }).message ?? 'error event'}`,
                code ?? 0,
              );
            }
            const o = this.slim(obj as T);
            const rv = o.metadata?.resourceVersion;
            if (rv !== undefined && rv !== '') this.resourceVersion = rv;
            if (type === 'ADDED' || type === 'MODIFIED') this.put(o);
            else if (type === 'DELETED') this.remove(o);
          },
          signal,
        );
        backoff.reset();
        if (gone) await this.relist();
      } catch (err) {
        if (signal.aborted) return;
        const gone = err instanceof ApiError && err.statusCode === 410;
        const backoffMs = backoff.next();
        this.log.debug({ err: (err as Error).message, gone, backoffMs }, 'watch ended with an error; relisting');
        await new Promise((r) => setTimeout(r, gone ? 0 : backoffMs));
        try {
          if (!signal.aborted) await this.relist();
        } catch (e) {
          this.log.warn({ err: (e as Error).message }, 'relist failed; retrying');
        }
      }
    }
  }
}
