// Stress test of the thread pool (core/thread_pool.h) for ThreadSanitizer
// builds (-DLOWBIT_SANITIZE=thread, tests/core/test_sanitizers.py), also a plain
// correctness check in any build:
//   * every ParallelFor covers [0, total) exactly once, for pools of 1 to 6
//     threads, sizes around the chunking thresholds, jobs back to back (the
//     workers spin) and after pauses longer than the spin (they sleep on the
//     condition variable); results written by the workers are read by the
//     caller with no other synchronisation than ParallelFor's return;
//   * pools created, used zero, one or two times and destroyed at once (the
//     destructor against workers still starting up or spinning);
//   * several pools driven from several threads at the same time;
//   * one pool shared by several threads the way the TFLite delegate shares
//     its pool between interpreters (try_lock; the loser runs inline);
//   * one prepared binary-conv filter read by several threads at once, each
//     convolving on its own pool (the TF shell's kernels run concurrently),
//     bit for bit against the reference kernel.
//     thread_check [rounds]     exit status 0 and "OK" on success
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "custom_ops/core/bconv2d.h"
#include "custom_ops/core/bitpack.h"
#include "custom_ops/core/thread_pool.h"

namespace {

std::atomic<int> g_failures{0};

void Fail(const std::string& what) {
  std::printf("FAIL %s\n", what.c_str());
  std::fflush(stdout);
  g_failures.fetch_add(1);
}

// One ParallelFor of `total` units on `executor`: each unit is written by
// exactly one chunk (plain stores), then checked by the caller.
void CoverOnce(lowbit::ParallelExecutor& executor, std::int64_t total, std::int64_t cost,
               std::vector<int>& hits, const char* where) {
  hits.assign(static_cast<std::size_t>(total), 0);
  executor.ParallelFor(total, cost, [&hits](std::int64_t begin, std::int64_t end) {
    for (std::int64_t i = begin; i < end; ++i) hits[static_cast<std::size_t>(i)] += 1;
  });
  for (std::int64_t i = 0; i < total; ++i) {
    if (hits[static_cast<std::size_t>(i)] != 1) {
      Fail(std::string(where) + ": unit " + std::to_string(i) + " of " + std::to_string(total) +
           " run " + std::to_string(hits[static_cast<std::size_t>(i)]) + " times");
      return;
    }
  }
}

// Sizes and costs around ParallelChunks' thresholds (20000 per chunk).
void RandomJob(lowbit::ParallelExecutor& executor, std::mt19937& rng, std::vector<int>& hits,
               const char* where) {
  static const std::int64_t kCosts[] = {1, 7, 1000, 20000, 1000000};
  const std::int64_t total = std::uniform_int_distribution<std::int64_t>(0, 300)(rng);
  const std::int64_t cost = kCosts[std::uniform_int_distribution<int>(0, 4)(rng)];
  CoverOnce(executor, total, cost, hits, where);
}

void SinglePools(int rounds) {
  std::mt19937 rng(1);
  std::vector<int> hits;
  for (int threads = 1; threads <= 6; ++threads) {
    lowbit::ThreadPool pool(threads);
    if (pool.num_threads() != threads) Fail("num_threads");
    for (int r = 0; r < rounds; ++r) {
      RandomJob(pool, rng, hits, "single pool");
      // Now and then a pause past the spin (200 us): the workers block.
      if (r % 16 == 15) std::this_thread::sleep_for(std::chrono::microseconds(400));
    }
  }
}

void CreateAndDestroy(int rounds) {
  std::mt19937 rng(2);
  std::vector<int> hits;
  for (int r = 0; r < rounds; ++r) {
    lowbit::ThreadPool pool(1 + r % 5);
    for (int j = 0; j < r % 3; ++j) CoverOnce(pool, 64, 1000000, hits, "churn");
  }
}

void ConcurrentPools(int rounds) {
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([t, rounds] {
      std::mt19937 rng(100 + t);
      std::vector<int> hits;
      lowbit::ThreadPool pool(2 + t % 2);
      for (int r = 0; r < rounds; ++r) RandomJob(pool, rng, hits, "concurrent pools");
    });
  }
  for (std::thread& t : threads) t.join();
}

// The delegate's pattern (tflite/delegate.cc): a pool created once under a
// mutex by whoever comes first, then used by whichever caller wins try_lock.
void SharedPool(int rounds) {
  std::mutex create_mutex, in_use;
  std::unique_ptr<lowbit::ThreadPool> pool;
  std::atomic<int> pooled{0}, inlined{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      {
        std::lock_guard<std::mutex> guard(create_mutex);
        if (pool == nullptr) pool = std::make_unique<lowbit::ThreadPool>(3);
      }
      std::mt19937 rng(200 + t);
      std::vector<int> hits;
      lowbit::InlineExecutor inline_executor;
      for (int r = 0; r < rounds; ++r) {
        std::unique_lock<std::mutex> lock(in_use, std::try_to_lock);
        lowbit::ParallelExecutor* executor = &inline_executor;
        if (lock.owns_lock()) executor = pool.get();
        (lock.owns_lock() ? pooled : inlined).fetch_add(1);
        RandomJob(*executor, rng, hits, "shared pool");
        if (lock.owns_lock()) lock.unlock();
        // Lets another thread take the pool now and then (the holder would
        // otherwise win nearly every try_lock).
        if (r % 4 == t) std::this_thread::yield();
      }
    });
  }
  for (std::thread& t : threads) t.join();
  std::printf("shared pool: %d jobs on the pool, %d inline\n", pooled.load(), inlined.load());
}

// One prepared filter, read concurrently by convolutions on separate pools.
void SharedFilter(int rounds) {
  lowbit::BConv2DParams p;
  p.batch = 2;
  p.in_h = 9;
  p.in_w = 11;
  p.channels_in = 70;
  p.out_channels = 37;
  p.kernel_h = p.kernel_w = 3;
  p.padding = lowbit::Padding::kSame;
  p.pad_value = 1;
  p.activation = lowbit::Activation::kRelu;
  if (!lowbit::ComputeBConv2DGeometry(&p).ok) {
    Fail("geometry");
    return;
  }
  std::mt19937 rng(3);
  const std::int64_t words = p.words();
  std::vector<lowbit::PackedWord> input(static_cast<std::size_t>(p.batch * p.in_h * p.in_w * words));
  for (auto& w : input) w = static_cast<lowbit::PackedWord>(rng());
  std::vector<lowbit::PackedWord> compact(static_cast<std::size_t>(
      p.out_channels * lowbit::CompactFilterWords(p.kernel_h, p.kernel_w, p.channels_in)));
  for (auto& w : compact) w = static_cast<lowbit::PackedWord>(rng());
  std::vector<lowbit::PackedWord> per_tap(
      static_cast<std::size_t>(p.out_channels * p.kernel_h * p.kernel_w * words));
  lowbit::UnpackCompactFilter(p, compact.data(), per_tap.data());
  std::vector<float> multiplier(p.out_channels), bias(p.out_channels);
  for (auto& m : multiplier) m = std::uniform_real_distribution<float>(-2, 2)(rng);
  for (auto& b : bias) b = std::uniform_real_distribution<float>(-3, 3)(rng);
  const std::size_t out_size =
      static_cast<std::size_t>(p.batch * p.out_h * p.out_w * p.out_channels);
  std::vector<float> expected(out_size);
  lowbit::InlineExecutor inline_executor;
  lowbit::BConv2D(lowbit::BConv2DKernel::kReference, p, input.data(), per_tap.data(),
                  multiplier.data(), bias.data(), expected.data(), inline_executor);
  lowbit::BConv2DFilter filter;
  filter.Prepare(lowbit::SelectBConv2DKernel(), p, compact.data());
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([&, t] {
      lowbit::ThreadPool pool(2 + t);
      std::vector<float> out(out_size);
      for (int r = 0; r < rounds; ++r) {
        std::fill(out.begin(), out.end(), -1.0f);
        lowbit::BConv2D(p, input.data(), filter, multiplier.data(), bias.data(), out.data(),
                        pool);
        if (std::memcmp(out.data(), expected.data(), out_size * sizeof(float)) != 0) {
          Fail("shared filter: thread " + std::to_string(t) + " round " + std::to_string(r));
          return;
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  std::printf("shared filter: kernel %s\n", lowbit::BConv2DKernelName(filter.kernel()));
}

}  // namespace

int main(int argc, char** argv) {
  const int rounds = argc > 1 ? std::atoi(argv[1]) : 200;
  SinglePools(rounds);
  CreateAndDestroy(rounds);
  ConcurrentPools(rounds);
  SharedPool(rounds);
  SharedFilter(rounds / 10 + 1);
  if (g_failures.load() != 0) return 1;
  std::printf("OK %d rounds\n", rounds);
  return 0;
}
