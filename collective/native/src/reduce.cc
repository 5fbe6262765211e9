// Element-wise reductions over n sources for the shared-memory data plane (shm.cc): dst = src[0] op src[1] op ...
// Written with GCC vector extensions (64-byte vectors) and compiled three times by target_clones (AVX-512, AVX2 and
// the x86-64 baseline), picked once at load time by the dynamic loader (ifunc); other architectures get one portable
// build. The sources are combined block by block so that the partial result stays in L1 while each source streams.
#include "reduce.h"

#include <cstring>

// The 64-byte vector helpers below are always inlined, so no vector crosses a call boundary (the ABI note is moot).
#pragma GCC diagnostic ignored "-Wpsabi"

namespace tensile {
namespace {

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define TENSILE_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define TENSILE_CLONES
#endif
#define TENSILE_INLINE inline __attribute__((always_inline))

template <typename T>
struct VecOf;
template <>
struct VecOf<float> {
  typedef float type __attribute__((vector_size(64)));
};
template <>
struct VecOf<double> {
  typedef double type __attribute__((vector_size(64)));
};
template <>
struct VecOf<int32_t> {
  typedef int32_t type __attribute__((vector_size(64)));
};
template <typename T>
using Vec = typename VecOf<T>::type;

// NaN wins min and max, like the JavaScript kernels (reduce-ops.ts) and torch.
template <typename T, int OP>
TENSILE_INLINE T Scalar(T a, T b) {
  if constexpr (OP == kSum || OP == kAvg) return a + b;
  if constexpr (OP == kProd) return a * b;
  if constexpr (OP == kMin) return (b < a || b != b) ? b : a;
  return (b > a || b != b) ? b : a;
}

template <typename T, int OP>
TENSILE_INLINE Vec<T> Vector(Vec<T> a, Vec<T> b) {
  if constexpr (OP == kSum || OP == kAvg) return a + b;
  if constexpr (OP == kProd) return a * b;
  if constexpr (OP == kMin) return ((b < a) | (b != b)) ? b : a;
  return ((b > a) | (b != b)) ? b : a;
}

// d[i] = a[i] op b[i]; d may equal a (each vector is loaded before it is stored).
template <typename T, int OP>
TENSILE_INLINE void Combine(T* d, const T* a, const T* b, size_t n) {
  constexpr size_t L = sizeof(Vec<T>) / sizeof(T);
  size_t i = 0;
  for (; i + L <= n; i += L) {
    Vec<T> va, vb;
    std::memcpy(&va, a + i, sizeof va);
    std::memcpy(&vb, b + i, sizeof vb);
    Vec<T> r = Vector<T, OP>(va, vb);
    std::memcpy(d + i, &r, sizeof r);
  }
  for (; i < n; i++) d[i] = Scalar<T, OP>(a[i], b[i]);
}

template <typename T, int OP>
TENSILE_INLINE void ReduceT(T* dst, const void* const* srcs, int nsrc, size_t count, int divisor) {
  constexpr size_t kBlock = 4096 / sizeof(T);
  for (size_t off = 0; off < count; off += kBlock) {
    const size_t n = count - off < kBlock ? count - off : kBlock;
    T* d = dst + off;
    const T* s0 = static_cast<const T*>(srcs[0]) + off;
    if (nsrc == 1) {
      if (d != s0) std::memmove(d, s0, n * sizeof(T));
    } else {
      Combine<T, OP>(d, s0, static_cast<const T*>(srcs[1]) + off, n);
      for (int q = 2; q < nsrc; q++) Combine<T, OP>(d, d, static_cast<const T*>(srcs[q]) + off, n);
    }
    if constexpr (OP == kAvg) {
      if (divisor > 1) {
        const T div = static_cast<T>(divisor);
        for (size_t i = 0; i < n; i++) d[i] = d[i] / div;
      }
    }
  }
}

template <typename T>
TENSILE_INLINE void ReduceOp(int op, T* dst, const void* const* srcs, int nsrc, size_t count, int divisor) {
  switch (op) {
    case kSum: ReduceT<T, kSum>(dst, srcs, nsrc, count, divisor); break;
    case kProd: ReduceT<T, kProd>(dst, srcs, nsrc, count, divisor); break;
    case kMin: ReduceT<T, kMin>(dst, srcs, nsrc, count, divisor); break;
    case kMax: ReduceT<T, kMax>(dst, srcs, nsrc, count, divisor); break;
    case kAvg: ReduceT<T, kAvg>(dst, srcs, nsrc, count, divisor); break;
    default: break;
  }
}

}  // namespace

TENSILE_CLONES
void Reduce(int dtype, int op, void* dst, const void* const* srcs, int nsrc, size_t count, int divisor) {
  switch (dtype) {
    case kFloat32: ReduceOp<float>(op, static_cast<float*>(dst), srcs, nsrc, count, divisor); break;
    case kFloat64: ReduceOp<double>(op, static_cast<double*>(dst), srcs, nsrc, count, divisor); break;
    case kInt32: ReduceOp<int32_t>(op, static_cast<int32_t*>(dst), srcs, nsrc, count, divisor); break;
    default: break;
  }
}

size_t DtypeSize(int dtype) {
  switch (dtype) {
    case kFloat32: return 4;
    case kFloat64: return 8;
    case kInt32: return 4;
    default: return 0;
  }
}

}  // namespace tensile
