// Argument checks and error text shared by the addon's bindings (shm.cc, net.cc, xfer.cc, nccl.cc): one wording
// everywhere.
#pragma once

#include <napi.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>

namespace tensile {

// "what: <strerror(errno)>", for the system call that just failed.
inline std::string Errno(const std::string& what) { return what + ": " + std::strerror(errno); }

// info[i] as a number; TypeError naming it otherwise.
inline double NumArg(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (!info[i].IsNumber()) throw Napi::TypeError::New(info.Env(), std::string(name) + " must be a number");
  return info[i].As<Napi::Number>().DoubleValue();
}

// info[i] as an integer in [min, max]; TypeError or RangeError naming it, its value and the bounds otherwise.
inline int64_t IntArg(const Napi::CallbackInfo& info, size_t i, const char* name, int64_t min, int64_t max) {
  const double v = NumArg(info, i, name);
  if (!(v >= static_cast<double>(min) && v <= static_cast<double>(max)) ||
      v != static_cast<double>(static_cast<int64_t>(v))) {
    throw Napi::RangeError::New(info.Env(), std::string(name) + " " + std::to_string(v) + ": expected an integer in [" +
                                                std::to_string(min) + ", " + std::to_string(max) + "]");
  }
  return static_cast<int64_t>(v);
}

// The first byte of a typed array's view, whether its memory is an ArrayBuffer or a SharedArrayBuffer (RPC hands
// received tensors out on SharedArrayBuffers, see xfer.cc; node-addon-api's TypedArray::ArrayBuffer().Data() refuses
// those with "Invalid argument"). The caller has checked that `a` is a typed array.
inline uint8_t* TypedArrayBytes(const Napi::TypedArray& a) {
  void* data = nullptr;
  const napi_status s = napi_get_typedarray_info(a.Env(), a, nullptr, nullptr, &data, nullptr, nullptr);
  NAPI_THROW_IF_FAILED(a.Env(), s, nullptr);
  return static_cast<uint8_t*>(data);
}

}  // namespace tensile
