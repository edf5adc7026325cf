#include "util/work_queue.h"

#include <cstdio>
#include <exception>

namespace mnemo {

WorkQueue::WorkQueue(int threads, size_t capacity, std::function<void()> init)
    : capacity_(capacity), init_(std::move(init)) {
  for (int i = 0; i < threads; ++i) workers_.emplace_back([this] { Run(); });
}

WorkQueue::~WorkQueue() {
  Shutdown();
  for (std::thread& t : workers_) t.join();
}

bool WorkQueue::TrySubmit(std::function<void()> task) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_ || tasks_.size() >= capacity_) return false;
    tasks_.push_back(std::move(task));
  }
  ready_.notify_one();
  return true;
}

void WorkQueue::Shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  ready_.notify_all();
}

size_t WorkQueue::queued() const {
  std::lock_guard<std::mutex> lock(mu_);
  return tasks_.size();
}

int WorkQueue::busy() const {
  std::lock_guard<std::mutex> lock(mu_);
  return busy_;
}

void WorkQueue::Run() {
  if (init_) init_();
  for (;;) {
    std::function<void()> task;
    {
      std::unique_lock<std::mutex> lock(mu_);
      ready_.wait(lock, [this] { return stopping_ || !tasks_.empty(); });
      if (tasks_.empty()) return;  // stopping and drained
      task = std::move(tasks_.front());
      tasks_.pop_front();
      ++busy_;
    }
    try {
      task();
    } catch (const std::exception& e) {  // tasks report their own errors; this only keeps the worker alive
      std::fprintf(stderr, "work queue: task threw: %s\n", e.what());
    } catch (...) {
      std::fprintf(stderr, "work queue: task threw\n");
    }
    std::lock_guard<std::mutex> lock(mu_);
    --busy_;
  }
}

}  // namespace mnemo
