// dlopen helpers shared by the BLAS and NCCL bindings. Nothing here touches JS values.
#pragma once

#include <dlfcn.h>
#include <glob.h>

#include <string>
#include <vector>

namespace tensile {

struct DlResult {
  void* handle = nullptr;
  std::string path;                 // the name that opened
  std::vector<std::string> tried;   // every name tried, with dlerror() for the failures
};

// Expands shell globs (e.g. /usr/local/cuda*/targets/x86_64-linux/lib/libcudart.so.*) in order; plain names are kept.
inline std::vector<std::string> ExpandCandidates(const std::vector<std::string>& patterns) {
  std::vector<std::string> out;
  for (const auto& p : patterns) {
    if (p.find_first_of("*?[") == std::string::npos) {
      out.push_back(p);
      continue;
    }
    glob_t g{};
    if (glob(p.c_str(), 0, nullptr, &g) == 0) {
      // Newest first: glob sorts ascending, so walk backwards.
      for (size_t i = g.gl_pathc; i > 0; i--) out.emplace_back(g.gl_pathv[i - 1]);
    }
    globfree(&g);
  }
  return out;
}

inline DlResult OpenFirst(const std::vector<std::string>& candidates) {
  DlResult r;
  for (const auto& name : candidates) {
    void* h = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (h != nullptr) {
      r.handle = h;
      r.path = name;
      r.tried.push_back(name + " (ok)");
      return r;
    }
    const char* err = dlerror();
    const bool missing = err == nullptr || std::string(err).find("No such file") != std::string::npos;
    r.tried.push_back(name + (missing ? std::string(" (not found)") : std::string(" (") + err + ")"));
  }
  return r;
}

template <typename F>
inline bool Sym(void* handle, const char* name, F* out) {
  void* p = dlsym(handle, name);
  *out = reinterpret_cast<F>(p);
  return p != nullptr;
}

inline std::string Join(const std::vector<std::string>& v, const char* sep) {
  std::string s;
  for (size_t i = 0; i < v.size(); i++) {
    if (i > 0) s += sep;
    s += v[i];
  }
  return s;
}

}  // namespace tensile
