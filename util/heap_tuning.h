// The heap settings every mnemo process that runs the model starts with (the CLI's main and the
// benchmarks, so they measure what the product runs).
#pragma once

namespace mnemo {

// Keeps freed buffers of up to 32 MiB in the heap instead of mapping and unmapping them per call: a
// forward pass allocates and frees the same few-MiB tensors every window, and with glibc's defaults each
// one came back as fresh pages (page faults were 17% of a memory-layer evaluation, which ran 2x faster
// with this; fact encoding 2.3x, docs/PERFORMANCE.md). At most 64 MiB of free heap is kept before it is
// returned to the system. Call once, first thing in main.
void KeepFreedTensorBuffers();

}  // namespace mnemo
