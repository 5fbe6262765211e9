// Distributed autograd on tensor/'s engine, installed into every agent as an extension.
//
// Forward: inside withContext(), every tensor that requires grad and crosses an RPC (request or response) gets a
// send node on the sender (identity whose inputs are the sent tensor, kept in the context by message id) and a
// recv node on the receiver (no local inputs; its backward sends the gradient back as a BACKWARD request).
// Tensors travel as raw Float32 bytes beside the body; the autograd metadata is {context id, message id}.
//
// Backward: `backward(ctx, roots)` runs the local engine from the roots. A recv node's backward awaits its BACKWARD
// RPC; the receiver runs the engine from the matching send node with that gradient (gradient accumulation is
// linear, so one engine run per arriving gradient gives the same leaf gradients as PyTorch's single GraphTask),
// which awaits its own recv nodes in turn. So the root's backward resolves exactly when all the work it caused,
// on every worker, is done; cycles between workers are fine. Leaf gradients go to the context, not to `.grad`.
// Unlike PyTorch's FAST mode, a send whose result is unused cannot hang anything: after the pass the root checks
// that each of its sends in the context received a gradient and rejects (AUTOGRAD) naming those that did not.

import { AsyncLocalStorage } from 'node:async_hooks';
import {
  Tensor,
  backward as runBackward,
  customFunction,
  isGradEnabled,
  SGD,
  Adam,
  type Optimizer,
} from '../tensor/index.js';
import { RpcError } from './api.js';
import type { AgentExtension, AgentHost } from './agent-extension.js';
import type { DecodeHook, EncodeHook } from './codec.js';
import { MsgType, type RawTensor } from './frame.js';
import type { RRef } from './rref.js';

interface DistContext {
  readonly id: number;
  /** message id -> the send node's output (backward is started from it) and the worker it went to. */
  readonly sends: Map<number, { out: Tensor; dest: number }>;
  readonly known: Set<number>;
  readonly grads: Map<Tensor, Tensor>;
  readonly sendsHit: Set<number>;
}

interface TensorData {
  s: number[];
  d: number;
  r?: boolean;
  c?: number;
  m?: number;
}

const ID_STRIDE = 2 ** 32;

/**
 * Install with `agent.use(new DistAutograd(agent))` before start (createAgent does); find it again with
 * `agent.extension(DistAutograd)`. A user call made inside a context carries the context id as this extension's
 * metadata; its handling on the callee runs inside that context.
 */
export class DistAutograd implements AgentExtension {
  readonly key = 'autograd';
  private readonly als = new AsyncLocalStorage<number>();
  private readonly contexts = new Map<number, DistContext>();
  private nextCtx = 1;
  private nextMsg = 1;
  /** Optimizers by class name, for DistributedOptimizer (no code shipping: the owner builds it by name). */
  private readonly optimizers = new Map<string, new (params: Tensor[], opts: never) => Optimizer<never>>([
    ['SGD', SGD as never],
    ['Adam', Adam as never],
  ]);
  private optimizerLock: Promise<unknown> = Promise.resolve();
  private readonly localOptimizers = new Map<string, Optimizer<never>>();
  private nextOptimizer = 1;

  constructor(private readonly agent: AgentHost) {
    agent.registerFunction('__distopt.new', ((name: string, params: RRef<Tensor>[], opts: unknown) =>
      this.newOptimizer(name, params, opts)) as never);
    agent.registerFunction('__distopt.step', ((key: string, ctxId: number) => this.stepOptimizer(key, ctxId)) as never);
    agent.registerFunction('__distopt.drop', ((key: string) => this.localOptimizers.delete(key)) as never);
  }

  // ------------------------------------------------------------------------------------------- contexts

  /** Runs `fn` with a new context id; the context is released on every worker it touched when fn settles. */
  async withContext<T>(fn: (contextId: number) => Promise<T> | T): Promise<T> {
    const id = this.agent.rank * ID_STRIDE + this.nextCtx++;
    this.contexts.set(id, newContext(id));
    try {
      return await this.als.run(id, () => fn(id));
    } finally {
      await this.releaseContext(id);
    }
  }

  currentContextId(): number | undefined {
    return this.als.getStore();
  }

  /** The context id a user call made now carries (AgentExtension hook). */
  callMetadata(): number | undefined {
    return this.als.getStore();
  }

  hasContext(id: number): boolean {
    return this.contexts.has(id);
  }

  private getContext(id: number): DistContext {
    const c = this.contexts.get(id);
    if (!c) throw new RpcError('AUTOGRAD', `Could not find autograd context with id: ${id} on '${this.agent.name}'`);
    return c;
  }

  /** Gradients accumulated in the context for this worker's leaves. */
  getGradients(contextId: number): Map<Tensor, Tensor> {
    return new Map(this.getContext(contextId).grads);
  }

  /** Releases the context here and, transitively, on every worker it touched. Idempotent. */
  async releaseContext(id: number): Promise<void> {
    const c = this.contexts.get(id);
    if (!c) return;
    this.contexts.delete(id);
    await Promise.all(
      [...c.known]
        .filter((r) => r !== this.agent.rank && !this.agent.isPeerLost(r))
        .map((r) =>
          this.agent
            .requestWithRetries(r, MsgType.CLEANUP_CONTEXT, { c: id })
            .catch((e: Error) => this.agent.logger.warn({ err: e.message, ctx: id }, 'rpc: context cleanup failed')),
        ),
    );
  }

  // ------------------------------------------------------------------------------------------- backward

  /**
   * Distributed backward from scalar roots (each must require grad). Resolves when every worker's part is done;
   * rejects with the first remote error, or AUTOGRAD when a send of this worker in the context got no gradient.
   */
  async backward(contextId: number, roots: Tensor[]): Promise<void> {
    const ctx = this.getContext(contextId);
    roots.forEach((r, i) => {
      if (!(r instanceof Tensor)) throw new RpcError('INVALID_ARGUMENT', `backward: root ${i} is not a Tensor`);
      if (!r.requiresGrad) throw new RpcError('AUTOGRAD', `backward: requiresGrad not set on root ${i}`);
      if (r.data.length !== 1)
        throw new RpcError('AUTOGRAD', `backward: root ${i} of shape [${r.shape}] is not a scalar`);
    });
    ctx.sendsHit.clear();
    await this.als.run(contextId, () =>
      runBackward(roots, undefined, { retainGraph: true, accumulate: (leaf, g) => accumulate(ctx, leaf, g) }),
    );
    const unused = [...ctx.sends].filter(([m]) => !ctx.sendsHit.has(m));
    if (unused.length > 0) {
      const which = unused.map(([m, s]) => `message ${m} to '${this.agent.peerName(s.dest)}'`).join(', ');
      throw new RpcError(
        'AUTOGRAD',
        `backward in context ${contextId}: ${unused.length} RPC send(s) got no gradient (${which}): the result of ` +
          'that call did not reach the roots; every RPC with tensors that require grad must feed the loss',
      );
    }
  }

  private async onBackward(src: number, body: Record<string, unknown>): Promise<unknown> {
    const ctx = this.getContext(Number(body.c));
    const m = Number(body.m);
    const s = ctx.sends.get(m);
    if (!s)
      throw new RpcError('AUTOGRAD', `no send function ${m} in autograd context ${ctx.id} on '${this.agent.name}'`);
    ctx.sendsHit.add(m);
    ctx.known.add(src);
    const g = body.g;
    if (!(g instanceof Tensor)) throw new RpcError('PROTOCOL', 'BACKWARD without a gradient tensor');
    await this.als.run(ctx.id, () =>
      runBackward([s.out], [g], { retainGraph: true, accumulate: (leaf, gr) => accumulate(ctx, leaf, gr) }),
    );
    return true;
  }

  // ------------------------------------------------------------------------------------------- agent hooks

  handle(type: number, src: number, body: unknown): Promise<unknown> | undefined {
    const b = (body ?? {}) as Record<string, unknown>;
    if (type === MsgType.BACKWARD) return this.onBackward(src, b);
    if (type === MsgType.CLEANUP_CONTEXT) return this.releaseContext(Number(b.c)).then(() => true);
    return undefined;
  }

  /** Runs request handling inside the caller's context (created here on first contact). */
  enter<T>(metadata: unknown, src: number, fn: () => Promise<T>): Promise<T> {
    if (typeof metadata !== 'number') return fn();
    const contextId = metadata;
    let c = this.contexts.get(contextId);
    if (!c) {
      c = newContext(contextId);
      this.contexts.set(contextId, c);
    }
    c.known.add(src);
    return this.als.run(contextId, fn);
  }

  encodeHook(dest: number): EncodeHook {
    const ctxId = this.als.getStore();
    const ctx = ctxId === undefined ? undefined : this.contexts.get(ctxId);
    ctx?.known.add(dest);
    return (v, add) => {
      if (!(v instanceof Tensor)) return undefined;
      const data: TensorData = { s: [...v.shape], d: add(v.data) };
      if (ctx && v.requiresGrad && isGradEnabled()) {
        const m = this.agent.rank * ID_STRIDE + this.nextMsg++;
        const out = customFunction({
          name: 'SendRpcBackward',
          forward: ([x]) => x!.detach(),
          backward: (g) => [g],
        })([v]);
        ctx.sends.set(m, { out, dest });
        data.c = ctx.id;
        data.m = m;
      } else if (v.requiresGrad) {
        data.r = true;
      }
      return { tag: 'T', data };
    };
  }

  decodeHook(src: number): DecodeHook {
    return (tag, raw, tensors) => {
      if (tag !== 'T') return undefined;
      const d = raw as TensorData;
      const bytes = tensors[d?.d] as RawTensor | undefined;
      if (!(bytes instanceof Float32Array) || !Array.isArray(d.s)) {
        throw new RpcError('PROTOCOL', `malformed tensor data ${JSON.stringify(raw)}`);
      }
      if (d.c === undefined || d.m === undefined) return new Tensor(bytes, d.s, { requiresGrad: d.r === true });
      const ctxId = d.c;
      const m = d.m;
      let ctx = this.contexts.get(ctxId);
      if (!ctx) {
        ctx = newContext(ctxId);
        this.contexts.set(ctxId, ctx);
      }
      ctx.known.add(src);
      const agent = this.agent;
      return customFunction({
        name: 'RecvRpcBackward',
        outputRequiresGrad: true,
        forward: () => new Tensor(bytes, d.s),
        backward: async (g) => {
          await agent.request(src, MsgType.BACKWARD, { c: ctxId, m, g }, 0, 'backward');
          return [];
        },
      })([]);
    };
  }

  // ------------------------------------------------------------------------------------------- optimizer

  /** Makes `cls` constructible by name on this worker (SGD and Adam are built in). */
  registerOptimizer(name: string, cls: new (params: Tensor[], opts: never) => Optimizer<never>): void {
    this.optimizers.set(name, cls);
  }

  private async newOptimizer(name: string, params: RRef<Tensor>[], opts: unknown): Promise<string> {
    const Cls = this.optimizers.get(name);
    if (!Cls) {
      throw new RpcError(
        'INVALID_ARGUMENT',
        `optimizer '${name}' is not known on '${this.agent.name}' (known: ${[...this.optimizers.keys()].join(', ')})`,
      );
    }
    const tensors = await Promise.all(params.map((p) => p.toHere()));
    const key = `${this.agent.rank}:${this.nextOptimizer++}`;
    this.localOptimizers.set(key, new Cls(tensors, opts as never));
    return key;
  }

  /** Steps one local optimizer with the context's gradients; steps on one worker are serialized. */
  private stepOptimizer(key: string, ctxId: number): Promise<boolean> {
    const run = async (): Promise<boolean> => {
      const opt = this.localOptimizers.get(key);
      if (!opt) throw new RpcError('AUTOGRAD', `optimizer ${key} does not exist on '${this.agent.name}'`);
      const ctx = this.getContext(ctxId);
      const saved = opt.params.map((p) => p.grad);
      opt.params.forEach((p) => (p.grad = ctx.grads.get(p) ?? null));
      try {
        opt.step();
      } finally {
        opt.params.forEach((p, i) => (p.grad = saved[i]!));
      }
      return true;
    };
    const next = this.optimizerLock.then(run, run);
    this.optimizerLock = next.catch(() => undefined);
    return next;
  }
}

function newContext(id: number): DistContext {
  return { id, sends: new Map(), known: new Set(), grads: new Map(), sendsHit: new Set() };
}

function accumulate(ctx: DistContext, leaf: Tensor, g: Tensor): void {
  const prev = ctx.grads.get(leaf);
  if (!prev) {
    ctx.grads.set(leaf, new Tensor(Float32Array.from(g.data), g.shape));
    return;
  }
  const a = prev.data;
  const b = g.data;
  for (let i = 0; i < a.length; i++) a[i]! += b[i]!;
}

/**
 * One optimizer per parameter owner, built there by class name; step(contextId) steps them all concurrently with
 * the gradients of that distributed autograd context.
 */
export class DistributedOptimizer {
  private constructor(
    private readonly agent: AgentHost,
    private readonly remotes: { owner: number; key: string }[],
  ) {}

  /** Resolves once every owner has built its optimizer (errors re-raised: "Error creating optimizer"). */
  static async create(
    agent: AgentHost,
    optimizerClass: { name: string } | string,
    paramRRefs: RRef<Tensor>[],
    options: Record<string, number | boolean>,
  ): Promise<DistributedOptimizer> {
    const name = typeof optimizerClass === 'string' ? optimizerClass : optimizerClass.name;
    const byOwner = new Map<number, RRef<Tensor>[]>();
    for (const p of paramRRefs) {
      const list = byOwner.get(p.ownerRank) ?? [];
      list.push(p);
      byOwner.set(p.ownerRank, list);
    }
    try {
      const remotes = await Promise.all(
        [...byOwner].map(async ([owner, ps]) => ({
          owner,
          key: (await agent.rpcAsync(owner, '__distopt.new', [name, ps, options])) as string,
        })),
      );
      return new DistributedOptimizer(agent, remotes);
    } catch (err) {
      throw new RpcError('AUTOGRAD', `Error creating optimizer: ${(err as Error).message}`, { cause: err });
    }
  }

  /** Steps every owner's optimizer with the gradients in `contextId`, concurrently. */
  async step(contextId: number): Promise<void> {
    try {
      await Promise.all(this.remotes.map((r) => this.agent.rpcAsync(r.owner, '__distopt.step', [r.key, contextId])));
    } catch (err) {
      throw new RpcError('AUTOGRAD', `Error running optimizer: ${(err as Error).message}`, { cause: err });
    }
  }
}
