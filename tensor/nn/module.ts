// nn.Module: parameters are the Tensor-valued properties of a module (in assignment order), submodules are its
// Module-valued properties, buffers are Tensors registered with `registerBuffer`. Names are dotted paths, as in
// PyTorch (`0.weight`, `encoder.fc1.bias`), so state dicts line up with a PyTorch model of the same structure.
import { TensorError } from '../api.js';
import { Tensor } from '../tensor.js';

export interface LoadStateDictOptions {
  /** Throw on missing or unexpected keys (default true). Shape mismatches always throw. */
  readonly strict?: boolean;
}

export interface LoadStateDictResult {
  readonly missingKeys: string[];
  readonly unexpectedKeys: string[];
}

export abstract class Module {
  /** Training mode (Dropout is active); set through train()/eval(). */
  training = true;
  readonly #bufferNames = new Set<string>();

  abstract forward(x: Tensor): Tensor;

  /** Same as forward (PyTorch's `module(x)`). */
  call(x: Tensor): Tensor {
    return this.forward(x);
  }

  /** Registers a non-trainable tensor saved in the state dict (running statistics and the like). */
  registerBuffer(name: string, t: Tensor): Tensor {
    (this as unknown as Record<string, unknown>)[name] = t;
    this.#bufferNames.add(name);
    return t;
  }

  /** Direct submodules, in assignment order. */
  namedChildren(): [string, Module][] {
    return Object.entries(this).filter((e): e is [string, Module] => e[1] instanceof Module);
  }

  /** This module and all below it, pre-order; this one has the name `prefix`. */
  namedModules(prefix = ''): [string, Module][] {
    const out: [string, Module][] = [[prefix, this]];
    for (const [name, child] of this.namedChildren()) out.push(...child.namedModules(join(prefix, name)));
    return out;
  }

  private ownTensors(buffers: boolean): [string, Tensor][] {
    return Object.entries(this).filter(
      (e): e is [string, Tensor] => e[1] instanceof Tensor && this.#bufferNames.has(e[0]) === buffers,
    );
  }

  /** All parameters with dotted names: each module's own first, then its children's (PyTorch's order). */
  namedParameters(): [string, Tensor][] {
    const out: [string, Tensor][] = [];
    const seen = new Set<Tensor>();
    for (const [prefix, m] of this.namedModules()) {
      for (const [name, p] of m.ownTensors(false)) {
        if (seen.has(p)) continue;
        seen.add(p);
        out.push([join(prefix, name), p]);
      }
    }
    return out;
  }

  parameters(): Tensor[] {
    return this.namedParameters().map(([, p]) => p);
  }

  namedBuffers(): [string, Tensor][] {
    const out: [string, Tensor][] = [];
    for (const [prefix, m] of this.namedModules()) {
      for (const [name, b] of m.ownTensors(true)) out.push([join(prefix, name), b]);
    }
    return out;
  }

  /** Parameters and buffers by name, detached and sharing storage with the module (copy before mutating). */
  stateDict(): Record<string, Tensor> {
    const out: Record<string, Tensor> = {};
    for (const [prefix, m] of this.namedModules()) {
      for (const [name, t] of [...m.ownTensors(false), ...m.ownTensors(true)]) out[join(prefix, name)] = t.detach();
    }
    return out;
  }

  /**
   * Copies values from `state` into this module's parameters and buffers (in place, so optimizers keep their
   * references). Throws TensorError('STATE_DICT_MISMATCH') naming every missing and unexpected key (when strict)
   * and every shape mismatch; nothing is copied when it throws.
   */
  loadStateDict(state: Record<string, Tensor>, opts: LoadStateDictOptions = {}): LoadStateDictResult {
    const strict = opts.strict ?? true;
    const own = this.stateDict();
    const missingKeys = Object.keys(own).filter((k) => !(k in state));
    const unexpectedKeys = Object.keys(state).filter((k) => !(k in own));
    const problems: string[] = [];
    let firstName: string | undefined;
    for (const [k, t] of Object.entries(own)) {
      const src = state[k];
      if (src === undefined) continue;
      if (!(src instanceof Tensor)) {
        problems.push(`"${k}" is not a Tensor`);
        firstName ??= k;
      } else if (src.shape.length !== t.shape.length || src.shape.some((d, i) => d !== t.shape[i])) {
        problems.push(`"${k}": shape [${src.shape}] in the state dict, [${t.shape}] in the model`);
        firstName ??= k;
      }
    }
    if (strict && missingKeys.length > 0) {
      problems.push(`missing keys: ${missingKeys.map((k) => `"${k}"`).join(', ')}`);
      firstName ??= missingKeys[0];
    }
    if (strict && unexpectedKeys.length > 0) {
      problems.push(`unexpected keys: ${unexpectedKeys.map((k) => `"${k}"`).join(', ')}`);
      firstName ??= unexpectedKeys[0];
    }
    if (problems.length > 0) {
      throw new TensorError(
        'STATE_DICT_MISMATCH',
        `loadStateDict(${this.constructor.name}): ${problems.join('; ')}`,
        firstName === undefined ? {} : { tensorName: firstName },
      );
    }
    for (const [k, t] of Object.entries(own)) {
      const src = state[k];
      if (src !== undefined) t.data.set(src.data);
    }
    return { missingKeys, unexpectedKeys };
  }

  /** Sets training mode here and below; returns this. */
  train(mode = true): this {
    for (const [, m] of this.namedModules()) m.training = mode;
    return this;
  }
  eval(): this {
    return this.train(false);
  }

  /** Clears parameter gradients (sets them to null, like PyTorch's default set_to_none=True). */
  zeroGrad(): void {
    for (const p of this.parameters()) p.grad = null;
  }
}

function join(prefix: string, name: string): string {
  return prefix === '' ? name : `${prefix}.${name}`;
}
