// WorkQueue: a fixed pool of worker threads fed by a bounded queue. The HTTP server runs all model work
// here, so the number of threads doing heavy work is fixed no matter how many connections are open, and
// a full queue is refused at once (HTTP 503 with Retry-After) instead of growing latency without bound.
//
// Thread-safety: TrySubmit may be called from any thread. The destructor stops accepting, lets the
// workers finish what is queued, and joins them.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace mnemo {

class WorkQueue {
 public:
  // `init` (may be empty) runs once on each worker thread before it takes work.
  WorkQueue(int threads, size_t capacity, std::function<void()> init = {});
  ~WorkQueue();
  WorkQueue(const WorkQueue&) = delete;
  WorkQueue& operator=(const WorkQueue&) = delete;

  // Queues `task` unless `capacity` tasks are already waiting (running ones do not count) or the queue is
  // shutting down; returns whether it was queued.
  bool TrySubmit(std::function<void()> task);
  // Stops accepting; queued tasks still run. Idempotent.
  void Shutdown();

  size_t queued() const;
  int busy() const;
  int threads() const { return static_cast<int>(workers_.size()); }
  size_t capacity() const { return capacity_; }

 private:
  void Run();
  const size_t capacity_;
  std::function<void()> init_;
  mutable std::mutex mu_;
  std::condition_variable ready_;
  std::deque<std::function<void()>> tasks_;
  int busy_ = 0;
  bool stopping_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace mnemo
