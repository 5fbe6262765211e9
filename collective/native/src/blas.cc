// BLAS binding: dlopens a CBLAS (OpenBLAS first) and calls cblas_sgemm/saxpy/sscal on the typed arrays' own memory
// (no copies). Calls are synchronous on the JS thread, like cblas itself; the TypeScript face (blas.ts) validates
// shapes with readable errors, and this file re-checks the bounds so that a bad call can never touch foreign memory.
#include <napi.h>

#include <cstdlib>
#include <mutex>
#include <string>

#include "dl.h"

namespace tensile {
namespace {

constexpr int kRowMajor = 101;
constexpr int kNoTrans = 111;
constexpr int kTrans = 112;

using SgemmFn = void (*)(int, int, int, int, int, int, float, const float*, int, const float*, int, float, float*, int);
using SaxpyFn = void (*)(int, float, const float*, int, float*, int);
using SscalFn = void (*)(int, float, float*, int);
using SetThreadsFn = void (*)(int);
using GetThreadsFn = int (*)();
using GetConfigFn = char* (*)();

struct Blas {
  bool tried = false;
  bool ok = false;
  std::string path;
  std::string name;
  std::string reason;
  std::vector<std::string> tried_paths;
  SgemmFn sgemm = nullptr;
  SaxpyFn saxpy = nullptr;
  SscalFn sscal = nullptr;
  SetThreadsFn set_threads = nullptr;
  GetThreadsFn get_threads = nullptr;
};

Blas g_blas;
std::mutex g_blas_mu;

void LoadOnce() {
  std::lock_guard<std::mutex> lock(g_blas_mu);
  if (g_blas.tried) return;
  g_blas.tried = true;
  std::vector<std::string> names;
  if (const char* env = std::getenv("TENSILE_BLAS_LIB"); env != nullptr && *env != '\0') names.emplace_back(env);
  for (const char* n : {"libopenblas.so.0", "libopenblas.so", "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
                        "libcblas.so.3", "libblas.so.3"}) {
    names.emplace_back(n);
  }
  // Try each library until one has cblas_sgemm (the reference libblas.so.3 may lack the C interface).
  for (const auto& name : names) {
    DlResult r = OpenFirst({name});
    g_blas.tried_paths.insert(g_blas.tried_paths.end(), r.tried.begin(), r.tried.end());
    if (r.handle == nullptr) continue;
    SgemmFn sgemm = nullptr;
    if (!Sym(r.handle, "cblas_sgemm", &sgemm)) {
      g_blas.tried_paths.back() = name + " (no cblas_sgemm)";
      dlclose(r.handle);
      continue;
    }
    g_blas.sgemm = sgemm;
    Sym(r.handle, "cblas_saxpy", &g_blas.saxpy);
    Sym(r.handle, "cblas_sscal", &g_blas.sscal);
    Sym(r.handle, "openblas_set_num_threads", &g_blas.set_threads);
    Sym(r.handle, "openblas_get_num_threads", &g_blas.get_threads);
    GetConfigFn config = nullptr;
    if (Sym(r.handle, "openblas_get_config", &config) && config() != nullptr) {
      g_blas.name = std::string("OpenBLAS ") + config();
    } else {
      g_blas.name = "cblas (" + name + ")";
    }
    g_blas.path = name;
    g_blas.ok = true;
    return;
  }
  g_blas.reason = "no CBLAS library with cblas_sgemm could be opened; tried: " + Join(g_blas.tried_paths, "; ") +
                  " (install libopenblas0-pthread, or set TENSILE_BLAS_LIB to a library path)";
}

Napi::Value Load(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  LoadOnce();
  Napi::Object out = Napi::Object::New(env);
  out.Set("ok", g_blas.ok);
  out.Set("name", g_blas.name);
  out.Set("path", g_blas.path);
  out.Set("reason", g_blas.reason);
  out.Set("canSetThreads", g_blas.set_threads != nullptr);
  out.Set("hasSaxpy", g_blas.saxpy != nullptr);
  out.Set("hasSscal", g_blas.sscal != nullptr);
  Napi::Array tried = Napi::Array::New(env, g_blas.tried_paths.size());
  for (size_t i = 0; i < g_blas.tried_paths.size(); i++) tried.Set(static_cast<uint32_t>(i), g_blas.tried_paths[i]);
  out.Set("tried", tried);
  return out;
}

// Returns the float32 data of argument i, or throws. `need` elements must fit.
float* F32(const Napi::CallbackInfo& info, size_t i, size_t need, const char* what) {
  Napi::Value v = info[i];
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array) {
    throw Napi::TypeError::New(info.Env(), std::string(what) + " must be a Float32Array");
  }
  Napi::Float32Array a = v.As<Napi::Float32Array>();
  if (a.ElementLength() < need) {
    throw Napi::RangeError::New(info.Env(), std::string(what) + " has " + std::to_string(a.ElementLength()) +
                                                " elements; the shape needs at least " + std::to_string(need));
  }
  return a.Data();
}

int Int(const Napi::CallbackInfo& info, size_t i) { return info[i].As<Napi::Number>().Int32Value(); }

// Elements a row-major rows×cols matrix with leading dimension ld spans.
size_t Span(int rows, int cols, int ld) {
  if (rows == 0 || cols == 0) return 0;
  return static_cast<size_t>(rows - 1) * static_cast<size_t>(ld) + static_cast<size_t>(cols);
}

void Require() {
  LoadOnce();
}

Napi::Value Sgemm(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Require();
  if (!g_blas.ok) throw Napi::Error::New(env, g_blas.reason);
  if (info.Length() < 13) throw Napi::TypeError::New(env, "sgemm takes 13 arguments");
  const bool ta = info[0].ToBoolean().Value();
  const bool tb = info[1].ToBoolean().Value();
  const int m = Int(info, 2), n = Int(info, 3), k = Int(info, 4);
  const float alpha = info[5].As<Napi::Number>().FloatValue();
  const int lda = Int(info, 7), ldb = Int(info, 9), ldc = Int(info, 12);
  const float beta = info[10].As<Napi::Number>().FloatValue();
  if (m < 0 || n < 0 || k < 0) throw Napi::RangeError::New(env, "sgemm: m, n, k must be >= 0");
  const int a_rows = ta ? k : m, a_cols = ta ? m : k;
  const int b_rows = tb ? n : k, b_cols = tb ? k : n;
  if (lda < (a_cols > 1 ? a_cols : 1) || ldb < (b_cols > 1 ? b_cols : 1) || ldc < (n > 1 ? n : 1)) {
    throw Napi::RangeError::New(env, "sgemm: a leading dimension is smaller than its row length");
  }
  const float* a = F32(info, 6, Span(a_rows, a_cols, lda), "sgemm: a");
  const float* b = F32(info, 8, Span(b_rows, b_cols, ldb), "sgemm: b");
  float* c = F32(info, 11, Span(m, n, ldc), "sgemm: c");
  if (m == 0 || n == 0) return env.Undefined();
  g_blas.sgemm(kRowMajor, ta ? kTrans : kNoTrans, tb ? kTrans : kNoTrans, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  return env.Undefined();
}

Napi::Value Saxpy(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Require();
  if (!g_blas.ok || g_blas.saxpy == nullptr) throw Napi::Error::New(env, "cblas_saxpy is not available");
  const int n = Int(info, 0);
  if (n < 0) throw Napi::RangeError::New(env, "saxpy: n must be >= 0");
  const float alpha = info[1].As<Napi::Number>().FloatValue();
  const float* x = F32(info, 2, static_cast<size_t>(n), "saxpy: x");
  float* y = F32(info, 3, static_cast<size_t>(n), "saxpy: y");
  if (n > 0) g_blas.saxpy(n, alpha, x, 1, y, 1);
  return env.Undefined();
}

Napi::Value Sscal(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Require();
  if (!g_blas.ok || g_blas.sscal == nullptr) throw Napi::Error::New(env, "cblas_sscal is not available");
  const int n = Int(info, 0);
  if (n < 0) throw Napi::RangeError::New(env, "sscal: n must be >= 0");
  const float alpha = info[1].As<Napi::Number>().FloatValue();
  float* x = F32(info, 2, static_cast<size_t>(n), "sscal: x");
  if (n > 0) g_blas.sscal(n, alpha, x, 1);
  return env.Undefined();
}

Napi::Value SetThreads(const Napi::CallbackInfo& info) {
  Require();
  const int n = Int(info, 0);
  if (g_blas.set_threads == nullptr) return Napi::Boolean::New(info.Env(), false);
  g_blas.set_threads(n);
  return Napi::Boolean::New(info.Env(), true);
}

Napi::Value GetThreads(const Napi::CallbackInfo& info) {
  Require();
  if (g_blas.get_threads == nullptr) return Napi::Number::New(info.Env(), 1);
  return Napi::Number::New(info.Env(), g_blas.get_threads());
}

}  // namespace

void InitBlas(Napi::Env env, Napi::Object exports) {
  exports.Set("blasLoad", Napi::Function::New(env, Load, "blasLoad"));
  exports.Set("blasSgemm", Napi::Function::New(env, Sgemm, "blasSgemm"));
  exports.Set("blasSaxpy", Napi::Function::New(env, Saxpy, "blasSaxpy"));
  exports.Set("blasSscal", Napi::Function::New(env, Sscal, "blasSscal"));
  exports.Set("blasSetThreads", Napi::Function::New(env, SetThreads, "blasSetThreads"));
  exports.Set("blasGetThreads", Napi::Function::New(env, GetThreads, "blasGetThreads"));
}

}  // namespace tensile
