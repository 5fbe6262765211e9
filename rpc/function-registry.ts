// The functions a worker serves: its own, then the process-wide ones (registerFunction of the module API), looked
// up by name when a CALL or REMOTE arrives; arguments are checked against the optional schema before the call.

import { RpcError, type RegisterOptions, type RpcFunction } from './api.js';

interface Registered {
  readonly fn: RpcFunction;
  readonly validate?: RegisterOptions<unknown[]>['validate'];
}

const globalFunctions = new Map<string, Registered>();

/** Registers a function for every agent in this process (module-level API). */
export function registerGlobalFunction(name: string, fn: RpcFunction, opts: RegisterOptions<unknown[]> = {}): void {
  globalFunctions.set(name, { fn, validate: opts.validate });
}

export class FunctionRegistry {
  private readonly functions = new Map<string, Registered>();

  /** `self` names this worker in errors. */
  constructor(private readonly self: string) {}

  /** Throws INVALID_ARGUMENT for an empty name or a non-function. A second registration replaces the first. */
  register(name: string, fn: RpcFunction, opts: RegisterOptions<unknown[]> = {}): void {
    if (typeof name !== 'string' || name.length === 0) {
      throw new RpcError('INVALID_ARGUMENT', `function name ${JSON.stringify(name)} must be a non-empty string`);
    }
    if (typeof fn !== 'function') throw new RpcError('INVALID_ARGUMENT', `registerFunction('${name}'): not a function`);
    this.functions.set(name, { fn, validate: opts.validate });
  }

  /**
   * Runs function `f` (a name off the wire) with argument array `a`. Rejects with PROTOCOL (not a name),
   * UNKNOWN_FUNCTION, INVALID_ARGUMENT (the argument schema), or whatever the function throws.
   */
  async run(f: unknown, a: unknown): Promise<unknown> {
    if (typeof f !== 'string') throw new RpcError('PROTOCOL', `function name must be a string, got ${typeof f}`);
    const reg = this.functions.get(f) ?? globalFunctions.get(f);
    if (!reg) {
      throw new RpcError(
        'UNKNOWN_FUNCTION',
        `function '${f}' is not registered on '${this.self}' (register it with registerFunction on every worker)`,
        { worker: this.self },
      );
    }
    let args = Array.isArray(a) ? a : [];
    if (reg.validate) {
      const r = reg.validate.safeParse(args);
      if (!r.success) {
        const detail = (r.error as { message?: string })?.message ?? String(r.error);
        throw new RpcError('INVALID_ARGUMENT', `arguments of '${f}' failed validation on '${this.self}': ${detail}`, {
          worker: this.self,
        });
      }
      args = r.data as unknown[];
    }
    return await (reg.fn as (...x: unknown[]) => unknown)(...args);
  }
}
