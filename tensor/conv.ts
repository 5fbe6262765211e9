// 2-D convolution (cross-correlation, like PyTorch's F.conv2d) by im2col + GEMM, groups = 1.
import { TensorError } from './api.js';
import { record } from './autograd.js';
import { sgemm } from './sgemm.js';
import { Tensor } from './tensor.js';

export interface Conv2dOptions {
  readonly stride?: number | readonly [number, number];
  readonly padding?: number | readonly [number, number];
}

function pair(
  v: number | readonly [number, number] | undefined,
  def: number,
  what: string,
  min: number,
): [number, number] {
  const p: [number, number] = v === undefined ? [def, def] : typeof v === 'number' ? [v, v] : [v[0], v[1]];
  if (!p.every((x) => Number.isInteger(x) && x >= min)) {
    throw new TensorError('INVALID_ARGUMENT', `conv2d: ${what} ${JSON.stringify(v)} must be integers ≥ ${min}`);
  }
  return p;
}

interface Geometry {
  c: number;
  h: number;
  w: number;
  kh: number;
  kw: number;
  sh: number;
  sw: number;
  ph: number;
  pw: number;
  oh: number;
  ow: number;
}

/** cols[(ci*kh + i)*kw + j][oy*ow + ox] = x[ci][oy*sh - ph + i][ox*sw - pw + j] (0 outside). */
function im2col(x: Float32Array, xo: number, g: Geometry, cols: Float32Array): void {
  const { c, h, w, kh, kw, sh, sw, ph, pw, oh, ow } = g;
  const hw = oh * ow;
  let row = 0;
  for (let ci = 0; ci < c; ci++) {
    for (let i = 0; i < kh; i++) {
      for (let j = 0; j < kw; j++, row++) {
        const ro = row * hw;
        for (let oy = 0; oy < oh; oy++) {
          const y = oy * sh - ph + i;
          const co = ro + oy * ow;
          if (y < 0 || y >= h) {
            cols.fill(0, co, co + ow);
            continue;
          }
          const xr = xo + (ci * h + y) * w;
          for (let ox = 0; ox < ow; ox++) {
            const xx = ox * sw - pw + j;
            cols[co + ox] = xx >= 0 && xx < w ? x[xr + xx] : 0;
          }
        }
      }
    }
  }
}

/** Inverse scatter of im2col: adds each column entry back onto the input position it came from. */
function col2im(cols: Float32Array, g: Geometry, dx: Float32Array, xo: number): void {
  const { c, h, w, kh, kw, sh, sw, ph, pw, oh, ow } = g;
  const hw = oh * ow;
  let row = 0;
  for (let ci = 0; ci < c; ci++) {
    for (let i = 0; i < kh; i++) {
      for (let j = 0; j < kw; j++, row++) {
        const ro = row * hw;
        for (let oy = 0; oy < oh; oy++) {
          const y = oy * sh - ph + i;
          if (y < 0 || y >= h) continue;
          const xr = xo + (ci * h + y) * w;
          const co = ro + oy * ow;
          for (let ox = 0; ox < ow; ox++) {
            const xx = ox * sw - pw + j;
            if (xx >= 0 && xx < w) dx[xr + xx] += cols[co + ox];
          }
        }
      }
    }
  }
}

/** x: [N, C, H, W]; weight: [O, C, kh, kw]; bias: [O] → [N, O, H', W']. */
export function conv2d(x: Tensor, weight: Tensor, bias: Tensor | null = null, opts: Conv2dOptions = {}): Tensor {
  if (x.ndim !== 4 || weight.ndim !== 4 || x.shape[1] !== weight.shape[1]) {
    throw new TensorError(
      'SHAPE_MISMATCH',
      `conv2d: input [${x.shape}] and weight [${weight.shape}]: expected [N, C, H, W] and [O, C, kh, kw] with the same C`,
    );
  }
  const [n, c, h, w] = x.shape as [number, number, number, number];
  const [o, , kh, kw] = weight.shape as [number, number, number, number];
  if (bias !== null && (bias.ndim !== 1 || bias.shape[0] !== o)) {
    throw new TensorError('SHAPE_MISMATCH', `conv2d: bias [${bias.shape}] should be [${o}]`);
  }
  const [sh, sw] = pair(opts.stride, 1, 'stride', 1);
  const [ph, pw] = pair(opts.padding, 0, 'padding', 0);
  const oh = Math.floor((h + 2 * ph - kh) / sh) + 1;
  const ow = Math.floor((w + 2 * pw - kw) / sw) + 1;
  if (oh <= 0 || ow <= 0) {
    throw new TensorError(
      'SHAPE_MISMATCH',
      `conv2d: kernel ${kh}x${kw} is larger than the padded input ${h + 2 * ph}x${w + 2 * pw}`,
    );
  }
  const g: Geometry = { c, h, w, kh, kw, sh, sw, ph, pw, oh, ow };
  const ckk = c * kh * kw;
  const hw = oh * ow;
  const cols = new Float32Array(ckk * hw);
  const out = new Float32Array(n * o * hw);
  for (let b = 0; b < n; b++) {
    im2col(x.data, b * c * h * w, g, cols);
    const ob = out.subarray(b * o * hw);
    if (bias !== null) for (let oc = 0; oc < o; oc++) ob.fill(bias.data[oc]!, oc * hw, (oc + 1) * hw);
    sgemm(false, false, o, hw, ckk, 1, weight.data, ckk, cols, hw, bias === null ? 0 : 1, ob, hw);
  }
  const inputs = bias === null ? [x, weight] : [x, weight, bias];
  return record(new Tensor(out, [n, o, oh, ow]), 'Conv2dBackward', inputs, (gout) => {
    const gx = x.requiresGrad ? new Float32Array(x.numel) : null;
    const gw = weight.requiresGrad ? new Float32Array(weight.numel) : null;
    const gb = bias !== null && bias.requiresGrad ? new Float32Array(o) : null;
    const dcols = gx === null ? null : new Float32Array(ckk * hw);
    for (let b = 0; b < n; b++) {
      const go = gout.data.subarray(b * o * hw, (b + 1) * o * hw);
      if (gw !== null) {
        im2col(x.data, b * c * h * w, g, cols);
        sgemm(false, true, o, ckk, hw, 1, go, hw, cols, hw, 1, gw, ckk);
      }
      if (gx !== null && dcols !== null) {
        sgemm(true, false, ckk, hw, o, 1, weight.data, ckk, go, hw, 0, dcols, hw);
        col2im(dcols, g, gx, b * c * h * w);
      }
      if (gb !== null) {
        for (let oc = 0; oc < o; oc++) {
          let s = 0;
          for (let p = oc * hw; p < (oc + 1) * hw; p++) s += go[p]!;
          gb[oc] += s;
        }
      }
    }
    const res = [gx === null ? null : new Tensor(gx, x.shape), gw === null ? null : new Tensor(gw, weight.shape)];
    if (bias !== null) res.push(gb === null ? null : new Tensor(gb, bias.shape));
    return res;
  });
}
