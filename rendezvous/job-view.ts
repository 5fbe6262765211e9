// A mirror of one job's keys (state, members, nodes/*: job-keys.ts), fed by a prefix subscription. One view is
// shared by every handler on the same store source (many simulated agents in one process stay O(events), not
// O(events × agents)); derived facts (earliest joiner, lost members, rank lookup) are cached per view version.
import { z } from 'zod';
import type { JobStatus, NodeDescriptor, NodeRecoveries, RoundMember } from './api.js';
import { keysUnder, type MembersDoc, type NodeDoc, type RecoveriesDoc, type StateDoc } from './job-keys.js';
import type { KvEntry, KvEvent, KvSubscription, RendezvousKv } from './kv.js';
import { assignGroupRanks } from './policy.js';

const parsedCache = new WeakMap<KvEntry, unknown>();

/** A recoveries/<nodeId> document as read from the store (anyone can write the store: checked, not trusted). */
const RecoveriesDocSchema = z.object({
  v: z.literal(1),
  nodeId: z.string(),
  host: z.string(),
  recoveries: z.array(
    z.object({
      cause: z.string(),
      path: z.enum(['live', 'restart']),
      recoveryMs: z.number().nonnegative(),
      stepsLost: z.number().int().nullable(),
      round: z.number().int(),
      startedAtMs: z.number(),
      detail: z.string(),
    }),
  ),
});

/** JSON.parse once per shared entry object: with many handlers on one watch, each value is parsed once. */
function parseEntry(entry: KvEntry): unknown {
  if (parsedCache.has(entry)) return parsedCache.get(entry);
  let value: unknown;
  try {
    value = JSON.parse(entry.value);
  } catch {
    value = undefined;
  }
  parsedCache.set(entry, value);
  return value;
}

export interface NodeView {
  readonly doc: NodeDoc;
  /** Revision of the node's last join/wait write: join order. */
  readonly modRevision: number;
  /** The lease its key is attached to (revoked to evict the node when its agent is known dead). */
  readonly lease?: string;
}

const NO_MEMBERS: MembersDoc = { round: -1, members: [] };

export class JobView {
  readonly stateKey: string;
  readonly membersKey: string;
  readonly nodesPrefix: string;
  readonly recoveriesPrefix: string;
  state: { readonly doc: StateDoc; readonly modRevision: number } | null = null;
  members: MembersDoc = NO_MEMBERS;
  readonly nodes = new Map<string, NodeView>();
  readonly countByRound = new Map<number, number>();
  /** recoveries/<nodeId> documents that parsed (malformed ones are skipped). */
  readonly recoveries = new Map<string, RecoveriesDoc>();
  /** Bumped by every batch of events. */
  version = 0;
  /** Bumped by every node-key deletion. */
  deletions = 0;
  private readonly listeners = new Set<() => void>();
  private firstCache: { version: number; round: number; nodeId: string | null } | null = null;
  private lostCache: { version: number; lost: string[] } | null = null;
  private rankCache: { members: MembersDoc; byId: Map<string, RoundMember> } | null = null;

  constructor(readonly prefix: string) {
    const keys = keysUnder(prefix);
    this.stateKey = keys.state;
    this.membersKey = keys.members;
    this.nodesPrefix = keys.nodesPrefix;
    this.recoveriesPrefix = keys.recoveriesPrefix;
  }

  load(entries: Iterable<KvEntry>): void {
    for (const e of entries) this.apply(e, 'put');
    this.version++;
  }

  /** Applies one watch batch, then tells every listener once. */
  applyBatch(events: readonly KvEvent[]): void {
    for (const e of events) this.apply(e, e.type);
    this.version++;
    for (const l of [...this.listeners]) l();
  }

  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  get listenerCount(): number {
    return this.listeners.size;
  }

  private apply(e: KvEntry, type: 'put' | 'delete'): void {
    const key = e.key;
    if (!key.startsWith(this.nodesPrefix)) {
      if (key === this.stateKey) {
        this.state = type === 'put' ? { doc: parseEntry(e) as StateDoc, modRevision: e.modRevision } : null;
      } else if (key === this.membersKey) {
        this.members = (type === 'put' ? (parseEntry(e) as MembersDoc | undefined) : undefined) ?? NO_MEMBERS;
      } else if (key.startsWith(this.recoveriesPrefix)) {
        const nodeId = key.slice(this.recoveriesPrefix.length);
        const doc = type === 'put' ? RecoveriesDocSchema.safeParse(parseEntry(e)) : null;
        if (doc?.success) this.recoveries.set(nodeId, doc.data);
        else this.recoveries.delete(nodeId);
      }
      return;
    }
    const nodeId = key.slice(this.nodesPrefix.length);
    const old = this.nodes.get(nodeId);
    if (old) this.bump(old.doc.round, -1);
    if (type === 'delete') {
      this.nodes.delete(nodeId);
      this.deletions++;
      return;
    }
    const doc = parseEntry(e) as NodeDoc | undefined;
    if (!doc || typeof doc.round !== 'number') {
      this.nodes.delete(nodeId);
      return;
    }
    this.nodes.set(nodeId, { doc, modRevision: e.modRevision, ...(e.lease === undefined ? {} : { lease: e.lease }) });
    this.bump(doc.round, 1);
  }

  private bump(round: number, delta: number): void {
    const n = (this.countByRound.get(round) ?? 0) + delta;
    if (n === 0) this.countByRound.delete(round);
    else this.countByRound.set(round, n);
  }

  /** Nodes whose key says round > `round` (waiting while `round` runs). */
  countAbove(round: number): number {
    let n = 0;
    for (const [r, c] of this.countByRound) if (r > round) n += c;
    return n;
  }

  /** The node that joined `round` first (smallest revision), or null. */
  firstJoiner(round: number): string | null {
    const c = this.firstCache;
    if (c && c.version === this.version && c.round === round) return c.nodeId;
    let first: string | null = null;
    let firstRev = Infinity;
    for (const [id, v] of this.nodes) {
      if (v.doc.round === round && v.modRevision < firstRev) {
        firstRev = v.modRevision;
        first = id;
      }
    }
    this.firstCache = { version: this.version, round, nodeId: first };
    return first;
  }

  /** Nodes that joined `round`, in join order. */
  joined(round: number): NodeView[] {
    return [...this.nodes.values()].filter((v) => v.doc.round === round).sort((a, b) => a.modRevision - b.modRevision);
  }

  /** Members of the last closed round whose node key is gone. */
  lostMembers(): string[] {
    const c = this.lostCache;
    if (c && c.version === this.version) return c.lost;
    const lost = this.members.members.filter((m) => !this.nodes.has(m.nodeId)).map((m) => m.nodeId);
    this.lostCache = { version: this.version, lost };
    return lost;
  }

  /** A member of the last closed round by nodeId. */
  member(nodeId: string): RoundMember | undefined {
    if (this.rankCache?.members !== this.members) {
      this.rankCache = { members: this.members, byId: new Map(this.members.members.map((m) => [m.nodeId, m])) };
    }
    return this.rankCache.byId.get(nodeId);
  }
}

/**
 * A JobStatus from a view. While a round is joining, `members` lists the nodes joined so far with the ranks they
 * would get if it closed now; `waiting` lists nodes registered for a later round (including nodes beyond max).
 */
export function statusFromView(runId: string, view: JobView): JobStatus {
  const doc = view.state?.doc;
  if (doc === undefined) return { runId, round: null, state: 'unknown', members: [], waiting: [], failureRestarts: 0 };
  const last = view.members;
  const recoveries: NodeRecoveries[] = [...view.recoveries.values()]
    .filter((r) => r.recoveries.length > 0)
    .sort((a, b) => (a.nodeId < b.nodeId ? -1 : a.nodeId > b.nodeId ? 1 : 0))
    .map((r) => ({ nodeId: r.nodeId, host: r.host, recoveries: r.recoveries }));
  const base = {
    ...(recoveries.length === 0 ? {} : { recoveries }),
    runId,
    round: doc.round,
    failureRestarts: doc.failureRestarts,
    minNodes: doc.minNodes,
    maxNodes: doc.maxNodes,
  };
  const running = doc.phase === 'running' && last.round === doc.round ? last.members : [];
  if (doc.closed) return { ...base, state: 'closed', members: running, waiting: [] };
  const waiting: NodeDescriptor[] = [...view.nodes.values()]
    .filter((n) => n.doc.round > doc.round)
    .sort((a, b) => a.modRevision - b.modRevision)
    .map((n) => n.doc.node);
  if (doc.phase === 'running') return { ...base, state: 'running', members: running, waiting };
  const joined = view.joined(doc.round).map((n) => n.doc.node);
  return { ...base, state: 'joining', members: assignGroupRanks(joined, last.members, doc.maxNodes), waiting };
}

/**
 * Hands out one JobView per prefix over a shared event source, reference-counted: the source subscription is
 * opened for the first user of a prefix and closed after the last one releases it.
 */
export class JobViewRegistry {
  private readonly views = new Map<string, Promise<{ view: JobView; sub: KvSubscription; users: number }>>();

  constructor(
    private readonly source: (
      prefix: string,
      onEvents: (events: readonly KvEvent[]) => void,
    ) => Promise<KvSubscription>,
  ) {}

  async acquire(prefix: string): Promise<{ view: JobView; release(): void }> {
    let p = this.views.get(prefix);
    if (p === undefined) {
      const view = new JobView(prefix);
      p = this.source(prefix, (events) => view.applyBatch(events)).then((sub) => {
        view.load(sub.entries);
        return { view, sub, users: 0 };
      });
      this.views.set(prefix, p);
      p.catch(() => this.views.delete(prefix));
    }
    const entry = await p;
    entry.users++;
    let released = false;
    return {
      view: entry.view,
      release: () => {
        if (released) return;
        released = true;
        entry.users--;
        if (entry.users === 0 && this.views.get(prefix) === p) {
          this.views.delete(prefix);
          entry.sub.unsubscribe();
        }
      },
    };
  }
}

const registries = new WeakMap<object, JobViewRegistry>();

/**
 * The job views shared by every handler whose key-value face has the same source (one etcd connection, one
 * embedded state): one subscription and one parsed mirror per job prefix, however many handlers use it.
 */
export function sharedJobViews(kv: Pick<RendezvousKv, 'source' | 'subscribe'>): JobViewRegistry {
  let reg = registries.get(kv.source);
  if (reg === undefined) {
    reg = new JobViewRegistry((prefix, onEvents) => kv.subscribe(prefix, onEvents));
    registries.set(kv.source, reg);
  }
  return reg;
}
