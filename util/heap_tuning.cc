#include "util/heap_tuning.h"

#include <malloc.h>

namespace mnemo {

void KeepFreedTensorBuffers() {
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 64 << 20);
}

}  // namespace mnemo
