// A small fixed-size thread pool implementing ParallelExecutor, for runtimes
// that bring no pool of their own (the TFLite shell). The calling thread takes
// part in the work, so ThreadPool(1) starts no thread at all. Workers poll for
// a new job for a short while (thread_pool.cc: kSpin) before sleeping, so that
// back-to-back layers do not pay a futex wake-up each.
#ifndef LOWBIT_CORE_THREAD_POOL_H_
#define LOWBIT_CORE_THREAD_POOL_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

#include "custom_ops/core/types.h"

namespace lowbit {

// The work split every executor uses: how many near-equal contiguous chunks
// [0, total) goes into on `threads` threads (fewer when the work is too small
// to be worth waking a thread for), and where chunk `index` starts.
int ParallelChunks(int threads, std::int64_t total, std::int64_t cost_per_unit);
inline std::int64_t ChunkStart(std::int64_t total, int chunks, int index) {
  return total * index / chunks;
}

class ThreadPool final : public ParallelExecutor {
 public:
  explicit ThreadPool(int num_threads);
  ~ThreadPool() override;
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return static_cast<int>(workers_.size()) + 1; }

  // Splits [0, total) into num_threads() contiguous chunks (fewer when the work
  // is too small to be worth waking a thread for) and blocks until all are done.
  // Not reentrant: one ParallelFor at a time per pool.
  void ParallelFor(std::int64_t total, std::int64_t cost_per_unit,
                   const RangeFn& fn) override;

 private:
  void WorkerLoop(int worker_index);

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable work_ready_;
  std::condition_variable work_done_;
  // The current job, written and read under mutex_.
  const RangeFn* job_ = nullptr;
  std::int64_t job_total_ = 0;
  int job_chunks_ = 0;
  // Also polled without the mutex while spinning; changed under it.
  std::atomic<std::uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<bool> stopping_{false};
};

}  // namespace lowbit

#endif  // LOWBIT_CORE_THREAD_POOL_H_
