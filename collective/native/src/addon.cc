// Entry point of the tensile native addon: registers the BLAS, NCCL, shared-memory, socket-plane, RPC transfer
// and stack-dump bindings.
#include <napi.h>

namespace tensile {
void InitBlas(Napi::Env env, Napi::Object exports);
void InitNccl(Napi::Env env, Napi::Object exports);
void InitShm(Napi::Env env, Napi::Object exports);
void InitNet(Napi::Env env, Napi::Object exports);
void InitXfer(Napi::Env env, Napi::Object exports);
void InitStacks(Napi::Env env, Napi::Object exports);
}  // namespace tensile

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("abiVersion", Napi::Number::New(env, 1));
  tensile::InitBlas(env, exports);
  tensile::InitNccl(env, exports);
  tensile::InitShm(env, exports);
  tensile::InitNet(env, exports);
  tensile::InitXfer(env, exports);
  tensile::InitStacks(env, exports);
  return exports;
}

NODE_API_MODULE(tensile_native, Init)
