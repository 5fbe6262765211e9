{
  # One addon, built with node-gyp and node-addon-api only: no CUDA, NCCL or BLAS headers or libraries are needed at
  # build time. libnccl, the CUDA runtime and OpenBLAS are opened with dlopen when first used (src/dl.h).
  "targets": [
    {
      "target_name": "tensile_native",
      "sources": ["src/addon.cc", "src/blas.cc", "src/nccl.cc", "src/net.cc", "src/reduce.cc", "src/shm.cc", "src/stacks.cc", "src/xfer.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17"],
      "cflags_cc": ["-fexceptions", "-std=c++17", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "libraries": ["-ldl", "-lpthread"]
    }
  ]
}
