#include "custom_ops/core/thread_pool.h"

#include <algorithm>
#include <chrono>

namespace lowbit {
namespace {

// Below this many inner-loop operations a chunk is not worth a thread wake-up
// (a few microseconds).
constexpr std::int64_t kMinCostPerChunk = 20000;

// How long a worker keeps polling for the next job, and the caller for the
// workers to finish, before blocking on a condition variable. A futex wake-up
// costs tens of microseconds on a VM, as much as a whole small convolution;
// layers of a network come back to back, so a short spin keeps the workers
// hot between them and only costs CPU for this long after the last one.
constexpr std::chrono::microseconds kSpin(200);

// Polls `done` for up to kSpin; true if it became true.
template <typename Predicate>
bool SpinUntil(Predicate done) {
  const auto deadline = std::chrono::steady_clock::now() + kSpin;
  for (int i = 0;; ++i) {
    if (done()) return true;
    if ((i & 63) == 63 && std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::yield();
  }
}

}  // namespace

int ParallelChunks(int threads, std::int64_t total, std::int64_t cost_per_unit) {
  const std::int64_t total_cost = total * std::max<std::int64_t>(cost_per_unit, 1);
  std::int64_t chunks = std::min<std::int64_t>(std::max(threads, 1), total);
  chunks = std::min<std::int64_t>(chunks, std::max<std::int64_t>(total_cost / kMinCostPerChunk, 1));
  return static_cast<int>(std::max<std::int64_t>(chunks, 1));
}

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
    stopping_.store(true, std::memory_order_release);
  }
  work_ready_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void ThreadPool::ParallelFor(std::int64_t total, std::int64_t cost_per_unit,
                             const RangeFn& fn) {
  if (total <= 0) return;
  const int chunks = ParallelChunks(num_threads(), total, cost_per_unit);
  if (chunks <= 1) {
    fn(0, total);
    return;
  }
  {
    // The job is published under the mutex and by the release store of the
    // generation; workers read it after an acquire load of the generation.
    std::lock_guard<std::mutex> lock(mutex_);
    job_ = &fn;
    job_total_ = total;
    job_chunks_ = chunks;
    pending_.store(job_chunks_ - 1, std::memory_order_relaxed);  // chunk 0 runs here
    generation_.fetch_add(1, std::memory_order_release);
  }
  work_ready_.notify_all();
  fn(ChunkStart(total, job_chunks_, 0), ChunkStart(total, job_chunks_, 1));
  if (!SpinUntil([this] { return pending_.load(std::memory_order_acquire) == 0; })) {
    std::unique_lock<std::mutex> lock(mutex_);
    work_done_.wait(lock, [this] { return pending_.load(std::memory_order_acquire) == 0; });
  }
}

void ThreadPool::WorkerLoop(int worker_index) {
  std::uint64_t seen_generation = 0;
  for (;;) {
    const auto has_news = [&] {
      return stopping_.load(std::memory_order_acquire) ||
             generation_.load(std::memory_order_acquire) != seen_generation;
    };
    if (!SpinUntil(has_news)) {
      std::unique_lock<std::mutex> lock(mutex_);
      work_ready_.wait(lock, has_news);
    }
    if (stopping_.load(std::memory_order_acquire)) return;
    const RangeFn* job;
    std::int64_t total;
    int chunks;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      seen_generation = generation_.load(std::memory_order_acquire);
      job = job_;
      total = job_total_;
      chunks = job_chunks_;
    }
    if (worker_index < chunks) {
      (*job)(ChunkStart(total, chunks, worker_index),
             ChunkStart(total, chunks, worker_index + 1));
      if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        // The caller may be blocked rather than spinning: wake it under the
        // mutex so that the wake-up cannot fall between its check and wait.
        std::lock_guard<std::mutex> lock(mutex_);
        work_done_.notify_one();
      }
    }
  }
}

}  // namespace lowbit
