#include "custom_ops/tf/tf_executor.h"

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>

#include "custom_ops/core/thread_pool.h"

namespace lowbit {
namespace {

// One ParallelFor call. Chunks are claimed from `next`, by the pool tasks and
// by the caller alike: the caller runs every chunk no pool thread has started,
// so it never waits on a task still queued behind busy threads (no deadlock
// when the caller is itself a pool thread), only on chunks being run. A task
// that starts after all chunks are claimed touches nothing but this state,
// which it co-owns, so the job may return before such tasks run.
struct Job {
  const ParallelExecutor::RangeFn* fn = nullptr;
  std::int64_t total = 0;
  int chunks = 0;
  std::atomic<int> next{0};
  std::atomic<int> finished{0};
  std::mutex mutex;
  std::condition_variable all_finished;

  // Runs unclaimed chunks until none is left.
  void RunChunks() {
    IeeeSubnormals ieee;  // on the pool thread, for this job (tf_executor.h)
    for (int i = next.fetch_add(1); i < chunks; i = next.fetch_add(1)) {
      (*fn)(ChunkStart(total, chunks, i), ChunkStart(total, chunks, i + 1));
      if (finished.fetch_add(1, std::memory_order_acq_rel) + 1 == chunks) {
        std::lock_guard<std::mutex> lock(mutex);
        all_finished.notify_all();
      }
    }
  }

  void WaitAll() {
    // The other chunks are running and about as long as the caller's: poll
    // for a little while before sleeping (a futex wake-up costs tens of
    // microseconds on a VM).
    for (int i = 0; i < 4096; ++i) {
      if (finished.load(std::memory_order_acquire) == chunks) return;
      std::this_thread::yield();
    }
    std::unique_lock<std::mutex> lock(mutex);
    all_finished.wait(lock, [this] { return finished.load(std::memory_order_acquire) == chunks; });
  }
};

}  // namespace

void TfExecutor::ParallelFor(std::int64_t total, std::int64_t cost_per_unit, const RangeFn& fn) {
  if (total <= 0) return;
  const int chunks = ParallelChunks(pool_->NumThreads(), total, cost_per_unit);
  if (chunks <= 1) {
    fn(0, total);
    return;
  }
  auto job = std::make_shared<Job>();
  job->fn = &fn;
  job->total = total;
  job->chunks = chunks;
  for (int i = 1; i < chunks; ++i) {
    pool_->Schedule([job] { job->RunChunks(); });
  }
  job->RunChunks();
  job->WaitAll();
}

}  // namespace lowbit
