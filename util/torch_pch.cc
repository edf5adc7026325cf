// Translation unit that owns the precompiled <torch/torch.h>; other targets REUSE_FROM it.
#include <torch/torch.h>
