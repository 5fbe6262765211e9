// Sizes and iteration counts shared by both sides of the benchmark (gloo_bench.py mirrors itersFor).
export const SIZES_BYTES = [4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20, 64 << 20];

/** Enough iterations for a stable median, bounded so that the largest sizes stay short. */
export function itersFor(sizeBytes: number): number {
  return Math.max(8, Math.min(60, Math.floor((32 << 20) / sizeBytes)));
}
