// Vectorised element-wise reductions for the shared-memory data plane (reduce.cc).
#pragma once
#include <cstddef>
#include <cstdint>

namespace tensile {

// Numbering shared with the TypeScript face (collective/native/addon.ts: ShmDType, ShmOp).
enum ShmDType { kFloat32 = 0, kFloat64 = 1, kInt32 = 2 };
enum ShmOp { kSum = 0, kProd = 1, kMin = 2, kMax = 3, kAvg = 4 };

// dst[i] = srcs[0][i] op srcs[1][i] op ... op srcs[nsrc-1][i] for i < count, in rank order; for kAvg the sum is then
// divided by `divisor` (int32 truncates toward zero). dst may equal srcs[0] but must not overlap another source.
void Reduce(int dtype, int op, void* dst, const void* const* srcs, int nsrc, size_t count, int divisor);

// Bytes per element, 0 for an unknown dtype.
size_t DtypeSize(int dtype);

}  // namespace tensile
