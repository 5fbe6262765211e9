// Differentiable tensor operations. Each computes its result into fresh contiguous storage and, when grad mode
// is on and an input requires grad, records a node whose backward closes over what it needs.
// Longer than ~500 lines on purpose: every differentiable op with its backward kept together, as PyTorch keeps its
// derivatives table in one place.
import { TensorError, type Shape } from './api.js';
import { record, sameShape } from './autograd.js';
import { sgemm } from './sgemm.js';
import { Tensor, normDim, numelOf, stridesOf } from './tensor-core.js';

export { normDim };

function asTensor(x: Tensor | number): Tensor {
  return x instanceof Tensor ? x : new Tensor(Float32Array.of(x), []);
}

// ---------------------------------------------------------------- broadcasting

export function broadcastShapes(a: Shape, b: Shape, op = 'broadcast'): number[] {
  const n = Math.max(a.length, b.length);
  const out = new Array<number>(n);
  for (let i = 0; i < n; i++) {
    const da = a[a.length - n + i] ?? 1;
    const db = b[b.length - n + i] ?? 1;
    if (da !== db && da !== 1 && db !== 1) {
      throw new TensorError('SHAPE_MISMATCH', `${op}: shapes [${a}] and [${b}] cannot be broadcast together`);
    }
    out[i] = da === 1 ? db : da;
  }
  return out;
}

/** For each element of `outShape` (row-major), the offset of the element of `inShape` broadcast onto it. */
function broadcastOffsets(outShape: Shape, inShape: Shape): Int32Array {
  const n = outShape.length;
  const total = numelOf(outShape);
  const offs = new Int32Array(total);
  const inStrides = stridesOf(inShape);
  const bs = new Array<number>(n);
  for (let i = 0; i < n; i++) {
    const k = inShape.length - n + i;
    bs[i] = k >= 0 && inShape[k] !== 1 ? inStrides[k]! : 0;
  }
  const idx = new Array<number>(n).fill(0);
  let off = 0;
  for (let e = 0; e < total; e++) {
    offs[e] = off;
    for (let d = n - 1; d >= 0; d--) {
      idx[d]++;
      off += bs[d]!;
      if (idx[d]! < outShape[d]!) break;
      off -= bs[d]! * idx[d]!;
      idx[d] = 0;
    }
  }
  return offs;
}

/** Sums `g` (of a broadcast result's shape) down to `shape`. */
export function sumTo(g: Tensor, shape: Shape): Tensor {
  if (sameShape(g.shape, shape)) return g;
  const out = new Float32Array(numelOf(shape));
  const gd = g.data;
  if (out.length === 1) {
    let s = 0;
    for (let i = 0; i < gd.length; i++) s += gd[i];
    out[0] = s;
  } else {
    const offs = broadcastOffsets(g.shape, shape);
    for (let i = 0; i < gd.length; i++) out[offs[i]!] += gd[i];
  }
  return new Tensor(out, shape);
}

/** Repeats `g` along broadcast dims to `shape` (inverse of sumTo). */
function expandTo(g: Tensor, shape: Shape): Tensor {
  if (sameShape(g.shape, shape)) return g;
  const total = numelOf(shape);
  const out = new Float32Array(total);
  if (g.numel === 1) return new Tensor(out.fill(g.data[0]!), shape);
  const offs = broadcastOffsets(shape, g.shape);
  const gd = g.data;
  for (let i = 0; i < total; i++) out[i] = gd[offs[i]!]!;
  return new Tensor(out, shape);
}

type BinOp = 'add' | 'sub' | 'mul' | 'div';

function binaryData(op: BinOp, a: Tensor, b: Tensor, outShape: number[]): Float32Array {
  const out = new Float32Array(numelOf(outShape));
  const x = a.data;
  const y = b.data;
  const n = out.length;
  if (x.length === n && y.length === n) {
    switch (op) {
      case 'add':
        for (let i = 0; i < n; i++) out[i] = x[i] + y[i];
        break;
      case 'sub':
        for (let i = 0; i < n; i++) out[i] = x[i] - y[i];
        break;
      case 'mul':
        for (let i = 0; i < n; i++) out[i] = x[i] * y[i];
        break;
      case 'div':
        for (let i = 0; i < n; i++) out[i] = x[i] / y[i];
        break;
    }
    return out;
  }
  if (x.length === n && y.length === 1) {
    const v = y[0];
    switch (op) {
      case 'add':
        for (let i = 0; i < n; i++) out[i] = x[i] + v;
        break;
      case 'sub':
        for (let i = 0; i < n; i++) out[i] = x[i] - v;
        break;
      case 'mul':
        for (let i = 0; i < n; i++) out[i] = x[i] * v;
        break;
      case 'div':
        for (let i = 0; i < n; i++) out[i] = x[i] / v;
        break;
    }
    return out;
  }
  if (x.length === 1 && y.length === n) {
    const v = x[0];
    switch (op) {
      case 'add':
        for (let i = 0; i < n; i++) out[i] = v + y[i];
        break;
      case 'sub':
        for (let i = 0; i < n; i++) out[i] = v - y[i];
        break;
      case 'mul':
        for (let i = 0; i < n; i++) out[i] = v * y[i];
        break;
      case 'div':
        for (let i = 0; i < n; i++) out[i] = v / y[i];
        break;
    }
    return out;
  }
  // Row broadcast: a is the full shape, b matches its trailing dims (bias add).
  const bl = y.length;
  if (x.length === n && bl > 0 && n % bl === 0 && sameShape(b.shape, outShape.slice(outShape.length - b.ndim))) {
    for (let r = 0; r < n; r += bl) {
      switch (op) {
        case 'add':
          for (let j = 0; j < bl; j++) out[r + j] = x[r + j] + y[j];
          break;
        case 'sub':
          for (let j = 0; j < bl; j++) out[r + j] = x[r + j] - y[j];
          break;
        case 'mul':
          for (let j = 0; j < bl; j++) out[r + j] = x[r + j] * y[j];
          break;
        case 'div':
          for (let j = 0; j < bl; j++) out[r + j] = x[r + j] / y[j];
          break;
      }
    }
    return out;
  }
  const ia = broadcastOffsets(outShape, a.shape);
  const ib = broadcastOffsets(outShape, b.shape);
  switch (op) {
    case 'add':
      for (let i = 0; i < n; i++) out[i] = x[ia[i]!] + y[ib[i]!];
      break;
    case 'sub':
      for (let i = 0; i < n; i++) out[i] = x[ia[i]!] - y[ib[i]!];
      break;
    case 'mul':
      for (let i = 0; i < n; i++) out[i] = x[ia[i]!] * y[ib[i]!];
      break;
    case 'div':
      for (let i = 0; i < n; i++) out[i] = x[ia[i]!] / y[ib[i]!];
      break;
  }
  return out;
}

function binary(op: BinOp, a: Tensor, b: Tensor): Tensor {
  const shape = broadcastShapes(a.shape, b.shape, op);
  return new Tensor(binaryData(op, a, b, shape), shape);
}

export function add(a: Tensor | number, b: Tensor | number): Tensor {
  const x = asTensor(a);
  const y = asTensor(b);
  return record(binary('add', x, y), 'AddBackward', [x, y], (g) => [sumTo(g, x.shape), sumTo(g, y.shape)]);
}

export function sub(a: Tensor | number, b: Tensor | number): Tensor {
  const x = asTensor(a);
  const y = asTensor(b);
  return record(binary('sub', x, y), 'SubBackward', [x, y], (g) => [
    sumTo(g, x.shape),
    y.requiresGrad ? scaleData(sumTo(g, y.shape), -1) : null,
  ]);
}

export function mul(a: Tensor | number, b: Tensor | number): Tensor {
  const x = asTensor(a);
  const y = asTensor(b);
  return record(binary('mul', x, y), 'MulBackward', [x, y], (g) => [
    x.requiresGrad ? sumTo(binary('mul', g, y), x.shape) : null,
    y.requiresGrad ? sumTo(binary('mul', g, x), y.shape) : null,
  ]);
}

export function div(a: Tensor | number, b: Tensor | number): Tensor {
  const x = asTensor(a);
  const y = asTensor(b);
  return record(binary('div', x, y), 'DivBackward', [x, y], (g) => {
    const gx = x.requiresGrad ? sumTo(binary('div', g, y), x.shape) : null;
    let gy: Tensor | null = null;
    if (y.requiresGrad) {
      // d(x/y)/dy = -x / y²
      const t = binary('div', binary('mul', g, x), binary('mul', y, y));
      gy = scaleData(sumTo(t, y.shape), -1);
    }
    return [gx, gy];
  });
}

function scaleData(t: Tensor, s: number): Tensor {
  const out = new Float32Array(t.numel);
  const d = t.data;
  for (let i = 0; i < out.length; i++) out[i] = d[i] * s;
  return new Tensor(out, t.shape);
}

// ---------------------------------------------------------------- unary

function unary(
  t: Tensor,
  name: string,
  f: (x: Float32Array, out: Float32Array) => void,
  df: (x: Float32Array, y: Float32Array, g: Float32Array, out: Float32Array) => void,
): Tensor {
  const out = new Float32Array(t.numel);
  f(t.data, out);
  const y = new Tensor(out, t.shape);
  return record(y, name, [t], (g) => {
    const gi = new Float32Array(t.numel);
    df(t.data, out, g.data, gi);
    return [new Tensor(gi, t.shape)];
  });
}

export function neg(t: Tensor): Tensor {
  return unary(
    t,
    'NegBackward',
    (x, o) => {
      for (let i = 0; i < x.length; i++) o[i] = -x[i];
    },
    (_x, _y, g, o) => {
      for (let i = 0; i < g.length; i++) o[i] = -g[i];
    },
  );
}
export function exp(t: Tensor): Tensor {
  return unary(
    t,
    'ExpBackward',
    (x, o) => {
      for (let i = 0; i < x.length; i++) o[i] = Math.exp(x[i]);
    },
    (_x, y, g, o) => {
      for (let i = 0; i < g.length; i++) o[i] = g[i] * y[i];
    },
  );
}
export function log(t: Tensor): Tensor {
  return unary(
    t,
    'LogBackward',
    (x, o) => {
      for (let i = 0; i < x.length; i++) o[i] = Math.log(x[i]);
    },
    (x, _y, g, o) => {
      for (let i = 0; i < g.length; i++) o[i] = g[i] / x[i];
    },
  );
}
export function sqrt(t: Tensor): Tensor {
  return unary(
    t,
    'SqrtBackward',
    (x, o) => {
      for (let i = 0; i < x.length; i++) o[i] = Math.sqrt(x[i]);
    },
    (_x, y, g, o) => {
      for (let i = 0; i < g.length; i++) o[i] = g[i] / (2 * y[i]);
    },
  );
}
export function abs(t: Tensor): Tensor {
  return unary(
    t,
    'AbsBackward',
    (x, o) => {
      for (let i = 0; i < x.length; i++) o[i] = Math.abs(x[i]);
    },
    (x, _y, g, o) => {
      for (let i = 0; i < g.length; i++) o[i] = x[i] > 0 ? g[i] : x[i] < 0 ? -g[i] : 0;
    },
  );
}
export function pow(t: Tensor, e: number): Tensor {
  if (typeof e !== 'number' || !Number.isFinite(e)) {
    throw new TensorError('INVALID_ARGUMENT', `pow: exponent ${e} must be a finite number`);
  }
  return unary(
    t,
    'PowBackward',
    (x, o) => {
      if (e === 2) for (let i = 0; i < x.length; i++) o[i] = x[i] * x[i];
      else for (let i = 0; i < x.length; i++) o[i] = Math.pow(x[i], e);
    },
    (x, _y, g, o) => {
      for (let i = 0; i < g.length; i++) o[i] = g[i] * e * Math.pow(x[i], e - 1);
    },
  );
}
export function relu(t: Tensor): Tensor {
  return unary(
    t,
    'ReluBackward',
    (x, o) => {
      for (let i = 0; i < x.length; i++) o[i] = x[i] > 0 ? x[i] : 0;
    },
    (_x, y, g, o) => {
      for (let i = 0; i < g.length; i++) o[i] = y[i] > 0 ? g[i] : 0;
    },
  );
}
export function sigmoid(t: Tensor): Tensor {
  return unary(
    t,
    'SigmoidBackward',
    (x, o) => {
      for (let i = 0; i < x.length; i++) o[i] = 1 / (1 + Math.exp(-x[i]));
    },
    (_x, y, g, o) => {
      for (let i = 0; i < g.length; i++) o[i] = g[i] * y[i] * (1 - y[i]);
    },
  );
}
export function tanh(t: Tensor): Tensor {
  return unary(
    t,
    'TanhBackward',
    (x, o) => {
      for (let i = 0; i < x.length; i++) o[i] = Math.tanh(x[i]);
    },
    (_x, y, g, o) => {
      for (let i = 0; i < g.length; i++) o[i] = g[i] * (1 - y[i] * y[i]);
    },
  );
}

/** A differentiable copy. */
export function clone(t: Tensor): Tensor {
  return record(new Tensor(t.data.slice(), t.shape), 'CloneBackward', [t], (g) => [g]);
}

// ---------------------------------------------------------------- matmul

/**
 * Matrix product. a: [..., m, k]; b: [k, n] (one GEMM over all of a's leading rows) or [..., k, n] with the same
 * leading dims as a (one GEMM per batch). Backward uses the BLAS transpose flags, never materialised transposes.
 */
export function matmul(a: Tensor, b: Tensor): Tensor {
  if (a.ndim < 2 || b.ndim < 2) {
    throw new TensorError(
      'SHAPE_MISMATCH',
      `matmul: both operands must be at least 2-D, got [${a.shape}] and [${b.shape}]`,
    );
  }
  const k = a.shape[a.ndim - 1]!;
  const m = a.shape[a.ndim - 2]!;
  const kb = b.shape[b.ndim - 2]!;
  const n = b.shape[b.ndim - 1]!;
  if (k !== kb) {
    throw new TensorError('SHAPE_MISMATCH', `matmul: [${a.shape}] @ [${b.shape}]: inner dims ${k} and ${kb} differ`);
  }
  if (b.ndim === 2) {
    const rows = a.numel / (k || 1);
    const outShape = [...a.shape.slice(0, -1), n];
    const out = new Float32Array(rows * n);
    sgemm(false, false, rows, n, k, 1, a.data, k, b.data, n, 0, out, n);
    return record(new Tensor(out, outShape), 'MmBackward', [a, b], (g) => {
      let ga: Tensor | null = null;
      let gb: Tensor | null = null;
      if (a.requiresGrad) {
        const d = new Float32Array(a.numel);
        sgemm(false, true, rows, k, n, 1, g.data, n, b.data, n, 0, d, k);
        ga = new Tensor(d, a.shape);
      }
      if (b.requiresGrad) {
        const d = new Float32Array(b.numel);
        sgemm(true, false, k, n, rows, 1, a.data, k, g.data, n, 0, d, n);
        gb = new Tensor(d, b.shape);
      }
      return [ga, gb];
    });
  }
  const batchA = a.shape.slice(0, -2);
  const batchB = b.shape.slice(0, -2);
  if (!sameShape(batchA, batchB)) {
    throw new TensorError(
      'SHAPE_MISMATCH',
      `matmul: batch dims of [${a.shape}] and [${b.shape}] differ (batch broadcasting is only supported for a 2-D right operand)`,
    );
  }
  const batches = numelOf(batchA);
  const out = new Float32Array(batches * m * n);
  for (let i = 0; i < batches; i++) {
    sgemm(
      false,
      false,
      m,
      n,
      k,
      1,
      a.data.subarray(i * m * k),
      k,
      b.data.subarray(i * k * n),
      n,
      0,
      out.subarray(i * m * n),
      n,
    );
  }
  return record(new Tensor(out, [...batchA, m, n]), 'BmmBackward', [a, b], (g) => {
    let ga: Tensor | null = null;
    let gb: Tensor | null = null;
    if (a.requiresGrad) {
      const d = new Float32Array(a.numel);
      for (let i = 0; i < batches; i++) {
        sgemm(
          false,
          true,
          m,
          k,
          n,
          1,
          g.data.subarray(i * m * n),
          n,
          b.data.subarray(i * k * n),
          n,
          0,
          d.subarray(i * m * k),
          k,
        );
      }
      ga = new Tensor(d, a.shape);
    }
    if (b.requiresGrad) {
      const d = new Float32Array(b.numel);
      for (let i = 0; i < batches; i++) {
        sgemm(
          true,
          false,
          k,
          n,
          m,
          1,
          a.data.subarray(i * m * k),
          k,
          g.data.subarray(i * m * n),
          n,
          0,
          d.subarray(i * k * n),
          n,
        );
      }
      gb = new Tensor(d, b.shape);
    }
    return [ga, gb];
  });
}

/** x @ wᵀ + bias, fused (PyTorch's F.linear). x: [..., in]; w: [out, in]; bias: [out]. */
export function linear(x: Tensor, w: Tensor, bias: Tensor | null = null): Tensor {
  return linearImpl(x, w, bias, false, 'linear');
}

/**
 * relu(x @ wᵀ + bias) as one node: the ReLU runs in place on the GEMM's output, and the backward masks the incoming
 * gradient and sums the bias gradient in the same pass. Same values as `relu(linear(x, w, bias))`.
 */
export function linearRelu(x: Tensor, w: Tensor, bias: Tensor | null = null): Tensor {
  return linearImpl(x, w, bias, true, 'linearRelu');
}

function linearImpl(x: Tensor, w: Tensor, bias: Tensor | null, withRelu: boolean, op: string): Tensor {
  if (w.ndim !== 2 || x.ndim < 1 || x.shape[x.ndim - 1] !== w.shape[1]) {
    throw new TensorError(
      'SHAPE_MISMATCH',
      `${op}: input [${x.shape}] does not match weight [${w.shape}] (expected [..., ${w.shape[1]}])`,
    );
  }
  const outF = w.shape[0]!;
  const inF = w.shape[1]!;
  if (bias !== null && (bias.ndim !== 1 || bias.shape[0] !== outF)) {
    throw new TensorError('SHAPE_MISMATCH', `${op}: bias [${bias.shape}] should be [${outF}]`);
  }
  const rows = x.numel / (inF || 1);
  const out = new Float32Array(rows * outF);
  if (bias !== null) {
    const bd = bias.data;
    for (let r = 0; r < rows; r++) out.set(bd, r * outF);
  }
  sgemm(false, true, rows, outF, inF, 1, x.data, inF, w.data, inF, bias === null ? 0 : 1, out, outF);
  if (withRelu) reluInPlace(out);
  const inputs = bias === null ? [x, w] : [x, w, bias];
  const name = withRelu ? 'LinearReluBackward' : 'LinearBackward';
  return record(new Tensor(out, [...x.shape.slice(0, -1), outF]), name, inputs, (g) => {
    const needBias = bias !== null && bias.requiresGrad;
    let gz = g.data;
    let gbData: Float32Array | null = null;
    if (withRelu) {
      // One pass: gz = g where out > 0 else 0, and (when needed) the bias gradient as gz's column sums.
      gz = new Float32Array(g.data.length);
      gbData = needBias ? new Float32Array(outF) : null;
      reluMask(g.data, out, gz, gbData, rows, outF);
    } else if (needBias) {
      gbData = new Float32Array(outF);
      columnSums(gz, gbData, rows, outF);
    }
    let gx: Tensor | null = null;
    let gw: Tensor | null = null;
    if (x.requiresGrad) {
      const d = new Float32Array(x.numel);
      sgemm(false, false, rows, inF, outF, 1, gz, outF, w.data, inF, 0, d, inF);
      gx = new Tensor(d, x.shape);
    }
    if (w.requiresGrad) {
      const d = new Float32Array(w.numel);
      sgemm(true, false, outF, inF, rows, 1, gz, outF, x.data, inF, 0, d, inF);
      gw = new Tensor(d, w.shape);
    }
    const gb = gbData === null ? null : new Tensor(gbData, bias!.shape);
    return bias === null ? [gx, gw] : [gx, gw, gb];
  });
}

function reluInPlace(y: Float32Array): void {
  for (let i = 0; i < y.length; i++) if (!(y[i] > 0)) y[i] = 0;
}

function reluMask(
  g: Float32Array,
  y: Float32Array,
  gz: Float32Array,
  gb: Float32Array | null,
  rows: number,
  cols: number,
): void {
  if (gb === null) {
    for (let i = 0; i < g.length; i++) gz[i] = y[i] > 0 ? g[i] : 0;
    return;
  }
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    for (let j = 0; j < cols; j++) {
      const v = y[o + j] > 0 ? g[o + j] : 0;
      gz[o + j] = v;
      gb[j] += v;
    }
  }
}

function columnSums(g: Float32Array, out: Float32Array, rows: number, cols: number): void {
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    for (let j = 0; j < cols; j++) out[j] += g[o + j];
  }
}

// ---------------------------------------------------------------- reductions

function reduceDims(t: Tensor, dim: number | readonly number[] | undefined, op: string): number[] {
  if (dim === undefined) return t.shape.map((_, i) => i);
  const list = typeof dim === 'number' ? [dim] : [...dim];
  const out = [...new Set(list.map((d) => normDim(d, t.ndim, op)))];
  return out.sort((x, y) => x - y);
}

function reducedShape(shape: Shape, dims: number[], keepdim: boolean): number[] {
  const out: number[] = [];
  shape.forEach((s, i) => {
    if (dims.includes(i)) {
      if (keepdim) out.push(1);
    } else out.push(s);
  });
  return out;
}

/** Sum over `dim` (all dims when undefined). */
export function sum(t: Tensor, dim?: number | readonly number[], keepdim = false): Tensor {
  const dims = reduceDims(t, dim, 'sum');
  const keptShape = reducedShape(t.shape, dims, true);
  let out: Float32Array;
  if (dims.length === t.ndim) {
    let s = 0;
    const d = t.data;
    for (let i = 0; i < d.length; i++) s += d[i];
    out = Float32Array.of(s);
  } else {
    out = sumTo(t, keptShape).data;
    if (out === t.data) out = out.slice();
  }
  const shape = keepdim ? keptShape : reducedShape(t.shape, dims, false);
  return record(new Tensor(out, shape), 'SumBackward', [t], (g) => [expandTo(new Tensor(g.data, keptShape), t.shape)]);
}

export function mean(t: Tensor, dim?: number | readonly number[], keepdim = false): Tensor {
  const dims = reduceDims(t, dim, 'mean');
  let count = 1;
  for (const d of dims) count *= t.shape[d]!;
  return mul(sum(t, dims, keepdim), 1 / count);
}

/** Splits `shape` around `dim` into [outer, size, inner]. */
function around(shape: Shape, dim: number): [number, number, number] {
  return [numelOf(shape.slice(0, dim)), shape[dim]!, numelOf(shape.slice(dim + 1))];
}

/** Max along `dim`: values (differentiable) and indices (as float32 values). */
export function max(t: Tensor, dim: number, keepdim = false): { values: Tensor; indices: Tensor } {
  const d = normDim(dim, t.ndim, 'max');
  if (t.ndim === 0) return { values: clone(t), indices: new Tensor(Float32Array.of(0), []) };
  const [outer, size, inner] = around(t.shape, d);
  if (size === 0) throw new TensorError('INVALID_ARGUMENT', `max: dim ${dim} of [${t.shape}] is empty`);
  const vals = new Float32Array(outer * inner);
  const idx = new Int32Array(outer * inner);
  const x = t.data;
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < inner; i++) {
      let best = x[o * size * inner + i]!;
      let bi = 0;
      for (let s = 1; s < size; s++) {
        const v = x[(o * size + s) * inner + i]!;
        if (v > best || (Number.isNaN(v) && !Number.isNaN(best))) {
          best = v;
          bi = s;
        }
      }
      vals[o * inner + i] = best;
      idx[o * inner + i] = bi;
    }
  }
  const shape = reducedShape(t.shape, [d], keepdim);
  const values = record(new Tensor(vals, shape), 'MaxBackward', [t], (g) => {
    const gi = new Float32Array(t.numel);
    for (let o = 0; o < outer; o++) {
      for (let i = 0; i < inner; i++) gi[(o * size + idx[o * inner + i]!) * inner + i] = g.data[o * inner + i]!;
    }
    return [new Tensor(gi, t.shape)];
  });
  return { values, indices: new Tensor(Float32Array.from(idx), shape) };
}

/** Max of all elements (a 0-d tensor). */
export function maxAll(t: Tensor): Tensor {
  if (t.numel === 0) throw new TensorError('INVALID_ARGUMENT', 'max: empty tensor');
  return max(t.reshape([t.numel]), 0).values;
}

/** Index of the max along `dim` (of the flattened tensor when undefined), as float32 values. */
export function argmax(t: Tensor, dim?: number, keepdim = false): Tensor {
  if (dim === undefined) return max(t.detach().reshape([t.numel]), 0).indices;
  return max(t.detach(), dim, keepdim).indices;
}

export function softmax(t: Tensor, dim: number): Tensor {
  return exp(logSoftmax(t, dim));
}

/** log(softmax(t)) along `dim`, computed stably (max subtracted). */
export function logSoftmax(t: Tensor, dim: number): Tensor {
  const d = normDim(dim, t.ndim, 'logSoftmax');
  const [outer, size, inner] = t.ndim === 0 ? [1, 1, 1] : around(t.shape, d);
  const x = t.data;
  const out = new Float32Array(t.numel);
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < inner; i++) {
      const base = o * size * inner + i;
      let m = -Infinity;
      for (let s = 0; s < size; s++) m = Math.max(m, x[base + s * inner]!);
      let z = 0;
      for (let s = 0; s < size; s++) z += Math.exp(x[base + s * inner]! - m);
      const lz = m + Math.log(z);
      for (let s = 0; s < size; s++) out[base + s * inner] = x[base + s * inner]! - lz;
    }
  }
  return record(new Tensor(out, t.shape), 'LogSoftmaxBackward', [t], (g) => {
    // dx = g - softmax * sum(g)
    const gi = new Float32Array(t.numel);
    const gd = g.data;
    for (let o = 0; o < outer; o++) {
      for (let i = 0; i < inner; i++) {
        const base = o * size * inner + i;
        let s0 = 0;
        for (let s = 0; s < size; s++) s0 += gd[base + s * inner]!;
        for (let s = 0; s < size; s++) {
          const p = base + s * inner;
          gi[p] = gd[p]! - Math.exp(out[p]!) * s0;
        }
      }
    }
    return [new Tensor(gi, t.shape)];
  });
}

// ---------------------------------------------------------------- shape

/** Same storage, new shape (one dim may be -1). */
export function reshape(t: Tensor, shape: Shape): Tensor {
  const s = [...shape];
  const neg = s.filter((d) => d === -1).length;
  if (neg > 1) throw new TensorError('INVALID_ARGUMENT', `reshape [${shape}]: only one dim may be -1`);
  if (neg === 1) {
    const known = numelOf(s.filter((d) => d !== -1));
    if (known === 0 || t.numel % known !== 0) {
      throw new TensorError('SHAPE_MISMATCH', `reshape: cannot view [${t.shape}] (${t.numel} elements) as [${shape}]`);
    }
    s[s.indexOf(-1)] = t.numel / known;
  }
  if (numelOf(s) !== t.numel || s.some((d) => !Number.isInteger(d) || d < 0)) {
    throw new TensorError('SHAPE_MISMATCH', `reshape: cannot view [${t.shape}] (${t.numel} elements) as [${shape}]`);
  }
  const src = t.shape;
  return record(new Tensor(t.data, s), 'ViewBackward', [t], (g) => [new Tensor(g.data, src)]);
}

export function flatten(t: Tensor, startDim = 0, endDim = -1): Tensor {
  if (t.ndim === 0) return reshape(t, [1]);
  const s = normDim(startDim, t.ndim, 'flatten');
  const e = normDim(endDim, t.ndim, 'flatten');
  if (s > e) throw new TensorError('INVALID_ARGUMENT', `flatten: startDim ${startDim} is after endDim ${endDim}`);
  return reshape(t, [...t.shape.slice(0, s), numelOf(t.shape.slice(s, e + 1)), ...t.shape.slice(e + 1)]);
}

export function unsqueeze(t: Tensor, dim: number): Tensor {
  const d = normDim(dim, t.ndim + 1, 'unsqueeze');
  return reshape(t, [...t.shape.slice(0, d), 1, ...t.shape.slice(d)]);
}

export function squeeze(t: Tensor, dim?: number): Tensor {
  if (dim === undefined)
    return reshape(
      t,
      t.shape.filter((s) => s !== 1),
    );
  const d = normDim(dim, t.ndim, 'squeeze');
  if (t.shape[d] !== 1) return t;
  return reshape(t, [...t.shape.slice(0, d), ...t.shape.slice(d + 1)]);
}

function permuteData(t: Tensor, perm: readonly number[]): { data: Float32Array; shape: number[] } {
  const n = t.ndim;
  const shape = perm.map((p) => t.shape[p]!);
  const inStrides = stridesOf(t.shape);
  const ps = perm.map((p) => inStrides[p]!);
  const out = new Float32Array(t.numel);
  const x = t.data;
  if (n === 2 && perm[0] === 1) {
    const r = t.shape[0]!;
    const c = t.shape[1]!;
    for (let i = 0; i < r; i++) for (let j = 0; j < c; j++) out[j * r + i] = x[i * c + j]!;
    return { data: out, shape };
  }
  const idx = new Array<number>(n).fill(0);
  let off = 0;
  for (let e = 0; e < out.length; e++) {
    out[e] = x[off]!;
    for (let d = n - 1; d >= 0; d--) {
      idx[d]++;
      off += ps[d]!;
      if (idx[d]! < shape[d]!) break;
      off -= ps[d]! * idx[d]!;
      idx[d] = 0;
    }
  }
  return { data: out, shape };
}

/** Reorders dims (copies). */
export function permute(t: Tensor, dims: readonly number[]): Tensor {
  const perm = dims.map((d) => normDim(d, t.ndim, 'permute'));
  if (perm.length !== t.ndim || new Set(perm).size !== perm.length) {
    throw new TensorError(
      'INVALID_ARGUMENT',
      `permute [${dims}]: not a permutation of the ${t.ndim} dims of [${t.shape}]`,
    );
  }
  const inv = new Array<number>(perm.length);
  perm.forEach((p, i) => (inv[p] = i));
  const { data, shape } = permuteData(t, perm);
  return record(new Tensor(data, shape), 'PermuteBackward', [t], (g) => {
    const r = permuteData(g, inv);
    return [new Tensor(r.data, r.shape)];
  });
}

export function transpose(t: Tensor, dim0: number, dim1: number): Tensor {
  const a = normDim(dim0, t.ndim, 'transpose');
  const b = normDim(dim1, t.ndim, 'transpose');
  const perm = t.shape.map((_, i) => i);
  perm[a] = b;
  perm[b] = a;
  return permute(t, perm);
}

/** Elements start..end-1 along `dim` (copies; negative indices count from the end; clamped like Python). */
export function slice(t: Tensor, dim: number, start: number, end?: number): Tensor {
  const d = normDim(dim, t.ndim, 'slice');
  const size = t.shape[d]!;
  const clampIdx = (v: number): number => Math.min(size, Math.max(0, v < 0 ? v + size : v));
  const s = clampIdx(start);
  const e = Math.max(s, clampIdx(end ?? size));
  const [outer, , inner] = around(t.shape, d);
  const len = e - s;
  const out = new Float32Array(outer * len * inner);
  for (let o = 0; o < outer; o++) {
    out.set(t.data.subarray((o * size + s) * inner, (o * size + e) * inner), o * len * inner);
  }
  const shape = [...t.shape];
  shape[d] = len;
  return record(new Tensor(out, shape), 'SliceBackward', [t], (g) => {
    const gi = new Float32Array(t.numel);
    for (let o = 0; o < outer; o++)
      gi.set(g.data.subarray(o * len * inner, (o + 1) * len * inner), (o * size + s) * inner);
    return [new Tensor(gi, t.shape)];
  });
}

/** Joins tensors along `dim` (all other dims must match). */
export function concat(tensors: readonly Tensor[], dim = 0): Tensor {
  if (tensors.length === 0) throw new TensorError('INVALID_ARGUMENT', 'concat: needs at least one tensor');
  const first = tensors[0]!;
  const d = normDim(dim, first.ndim, 'concat');
  tensors.forEach((t, i) => {
    if (t.ndim !== first.ndim || t.shape.some((s, j) => j !== d && s !== first.shape[j])) {
      throw new TensorError(
        'SHAPE_MISMATCH',
        `concat: tensor ${i} has shape [${t.shape}], incompatible with [${first.shape}] along dim ${d}`,
      );
    }
  });
  const [outer, , inner] = around(first.shape, d);
  const sizes = tensors.map((t) => t.shape[d]!);
  const total = sizes.reduce((x, y) => x + y, 0);
  const out = new Float32Array(outer * total * inner);
  let at = 0;
  tensors.forEach((t, i) => {
    const len = sizes[i]!;
    for (let o = 0; o < outer; o++) {
      out.set(t.data.subarray(o * len * inner, (o + 1) * len * inner), (o * total + at) * inner);
    }
    at += len;
  });
  const shape = [...first.shape];
  shape[d] = total;
  return record(new Tensor(out, shape), 'CatBackward', tensors, (g) => {
    let from = 0;
    return tensors.map((_, i) => {
      const len = sizes[i]!;
      const gi = new Float32Array(outer * len * inner);
      for (let o = 0; o < outer; o++) {
        gi.set(g.data.subarray((o * total + from) * inner, (o * total + from + len) * inner), o * len * inner);
      }
      from += len;
      return new Tensor(gi, tensors[i]!.shape);
    });
  });
}

/** Stacks same-shape tensors along a new dim. */
export function stack(tensors: readonly Tensor[], dim = 0): Tensor {
  if (tensors.length === 0) throw new TensorError('INVALID_ARGUMENT', 'stack: needs at least one tensor');
  return concat(
    tensors.map((t) => unsqueeze(t, dim)),
    dim,
  );
}

/** Rows `indices` of `t` along dim 0 (gather; backward scatters with addition). */
export function indexSelect(t: Tensor, indices: ArrayLike<number>): Tensor {
  if (t.ndim === 0) throw new TensorError('INVALID_ARGUMENT', 'indexSelect: needs at least a 1-d tensor');
  const rows = t.shape[0]!;
  const row = t.numel / (rows || 1);
  const out = new Float32Array(indices.length * row);
  for (let i = 0; i < indices.length; i++) {
    const r = indices[i]!;
    if (!Number.isInteger(r) || r < 0 || r >= rows) {
      throw new TensorError('INVALID_ARGUMENT', `indexSelect: index ${r} is out of range [0, ${rows})`);
    }
    out.set(t.data.subarray(r * row, (r + 1) * row), i * row);
  }
  const idx = Int32Array.from(indices);
  return record(new Tensor(out, [indices.length, ...t.shape.slice(1)]), 'IndexSelectBackward', [t], (g) => {
    const gi = new Float32Array(t.numel);
    for (let i = 0; i < idx.length; i++) {
      const o = idx[i]! * row;
      for (let j = 0; j < row; j++) gi[o + j] += g.data[i * row + j]!;
    }
    return [new Tensor(gi, t.shape)];
  });
}
