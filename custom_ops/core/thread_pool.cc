#include "custom_ops/core/thread_pool.h"

#include <algorithm>

namespace lowbit {
namespace {

// Below this many inner-loop operations a chunk is not worth a thread wake-up
// (a few microseconds).
constexpr std::int64_t kMinCostPerChunk = 20000;

// Bounds of chunk `index` of `chunks` near-equal parts of [0, total).
std::int64_t ChunkStart(std::int64_t total, int chunks, int index) {
  return total * index / chunks;
}

}  // namespace

ThreadPool::ThreadPool(int num_threads) {
  const int extra = std::max(num_threads, 1) - 1;
  workers_.reserve(extra);
  for (int i = 0; i < extra; ++i) {
    workers_.emplace_back([this, i] { WorkerLoop(i + 1); });
  }
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  work_ready_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void ThreadPool::ParallelFor(std::int64_t total, std::int64_t cost_per_unit,
                             const RangeFn& fn) {
  if (total <= 0) return;
  const std::int64_t total_cost = total * std::max<std::int64_t>(cost_per_unit, 1);
  std::int64_t chunks = std::min<std::int64_t>(num_threads(), total);
  chunks = std::min<std::int64_t>(chunks, std::max<std::int64_t>(total_cost / kMinCostPerChunk, 1));
  if (chunks <= 1) {
    fn(0, total);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    job_ = &fn;
    job_total_ = total;
    job_chunks_ = static_cast<int>(chunks);
    pending_ = job_chunks_ - 1;  // chunks 1.. run on workers, chunk 0 here
    ++generation_;
  }
  work_ready_.notify_all();
  fn(ChunkStart(total, job_chunks_, 0), ChunkStart(total, job_chunks_, 1));
  std::unique_lock<std::mutex> lock(mutex_);
  work_done_.wait(lock, [this] { return pending_ == 0; });
  job_ = nullptr;
}

void ThreadPool::WorkerLoop(int worker_index) {
  std::uint64_t seen_generation = 0;
  for (;;) {
    const RangeFn* job;
    std::int64_t total;
    int chunks;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      work_ready_.wait(lock, [&] { return stopping_ || generation_ != seen_generation; });
      if (stopping_) return;
      seen_generation = generation_;
      job = job_;
      total = job_total_;
      chunks = job_chunks_;
    }
    if (worker_index < chunks) {
      (*job)(ChunkStart(total, chunks, worker_index),
             ChunkStart(total, chunks, worker_index + 1));
      std::lock_guard<std::mutex> lock(mutex_);
      if (--pending_ == 0) work_done_.notify_one();
    }
  }
}

}  // namespace lowbit
