// Where the model runs: the --device argument ("cpu", "cuda" or "cuda:N") turned into a torch::Device.
//
// The CPU is always there. CUDA needs a LibTorch built with CUDA and a GPU the process can see; a
// CPU-only LibTorch (Debian's libtorch-dev, what this project builds with by default) compiles every
// CUDA call but reports no devices, so asking for one fails here, before anything is loaded.
#pragma once

#include <torch/torch.h>

#include <string>

#include "util/status.h"

namespace mnemo {

// Parses `name` into a device this process can use. InvalidArgument for anything but cpu, cuda and
// cuda:N; for cuda when this LibTorch has no CUDA support or sees no GPU; for cuda:N past the last GPU.
Status ParseDevice(const std::string& name, torch::Device* out);

}  // namespace mnemo
