// Peak binary MAC rate of this CPU: the XOR + popcount + add loop of a binary
// convolution with every operand already in registers (no loads, no stores).
//
// One binary multiply-accumulate (MAC) is one bit: acc += popcount(a XOR w)
// over a W-bit word does W of them. Each path keeps A independent accumulator
// chains (enough to hide the popcount latency) and re-reads its A input
// registers every iteration; an empty asm statement tells the compiler that
// they changed, so the XOR and popcount cannot be hoisted out of the loop and
// cost nothing themselves.
//
// Paths (each only if the CPU has it):
//   avx512_vpopcntdq  vpxord + vpopcntd + vpaddd on zmm: 512 MACs per triple
//                     (the lanes are 32 bits wide, as in the bconv2d kernel)
//   avx2              vpxor + nibble-table popcount (vpshufb) into byte
//                     counters, folded into 64-bit lanes with vpsadbw
//   scalar            xor + popcnt + add on 64-bit registers
//
// Built by benchmarks/bconv2d_benchmark.py on first use:
//   g++ -O2 -march=native -pthread peak_popcount.cc -o peak_popcount
// Usage: peak_popcount [threads=1] [seconds per repetition=0.15] [repetitions=5]
// Prints one line per available path:
//   path=<name> threads=<n> bits=<lane bits> binary_macs_per_s=<rate, best repetition>
// and a last line `best=<name> binary_macs_per_s=<rate>`.

#include <immintrin.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

namespace {

// Opaque sink so that the accumulators are live at the end of a run.
std::atomic<uint64_t> g_sink{0};

template <typename T>
inline void Clobber(T& value) {
  asm volatile("" : "+v"(value));
}

inline void ClobberGpr(uint64_t& value) { asm volatile("" : "+r"(value)); }

#define PEAK_UNROLL _Pragma("GCC unroll 16")

// ---- AVX-512 VPOPCNTDQ -------------------------------------------------------
// Written in assembly: compilers spill or copy some of the 12 accumulators of
// the intrinsics version. Registers: inputs zmm0-11, accumulators zmm12-23, the
// filter word zmm24, temporaries zmm25-31 (renamed by the core anyway).
constexpr int kAccZmm = 12;

__attribute__((target("avx512f,avx512vpopcntdq"))) uint64_t RunAvx512(uint64_t iterations) {
  alignas(64) uint32_t seed[16 * (kAccZmm + 1)];
  for (int i = 0; i < 16 * (kAccZmm + 1); ++i) seed[i] = 0x9e3779b9u * (i + 1);
  alignas(64) uint32_t out[16];
  if (iterations == 0) return 0;
  asm volatile(
      "vmovdqa32 0(%[seed]), %%zmm0\n\t"
      "vmovdqa32 64(%[seed]), %%zmm1\n\t"
      "vmovdqa32 128(%[seed]), %%zmm2\n\t"
      "vmovdqa32 192(%[seed]), %%zmm3\n\t"
      "vmovdqa32 256(%[seed]), %%zmm4\n\t"
      "vmovdqa32 320(%[seed]), %%zmm5\n\t"
      "vmovdqa32 384(%[seed]), %%zmm6\n\t"
      "vmovdqa32 448(%[seed]), %%zmm7\n\t"
      "vmovdqa32 512(%[seed]), %%zmm8\n\t"
      "vmovdqa32 576(%[seed]), %%zmm9\n\t"
      "vmovdqa32 640(%[seed]), %%zmm10\n\t"
      "vmovdqa32 704(%[seed]), %%zmm11\n\t"
      "vmovdqa32 768(%[seed]), %%zmm24\n\t"
      "vpxord %%zmm12, %%zmm12, %%zmm12\n\t"
      "vpxord %%zmm13, %%zmm13, %%zmm13\n\t"
      "vpxord %%zmm14, %%zmm14, %%zmm14\n\t"
      "vpxord %%zmm15, %%zmm15, %%zmm15\n\t"
      "vpxord %%zmm16, %%zmm16, %%zmm16\n\t"
      "vpxord %%zmm17, %%zmm17, %%zmm17\n\t"
      "vpxord %%zmm18, %%zmm18, %%zmm18\n\t"
      "vpxord %%zmm19, %%zmm19, %%zmm19\n\t"
      "vpxord %%zmm20, %%zmm20, %%zmm20\n\t"
      "vpxord %%zmm21, %%zmm21, %%zmm21\n\t"
      "vpxord %%zmm22, %%zmm22, %%zmm22\n\t"
      "vpxord %%zmm23, %%zmm23, %%zmm23\n\t"
      ".p2align 5\n\t"
      "1:\n\t"
      "vpxord %%zmm0, %%zmm24, %%zmm25\n\t"
      "vpopcntd %%zmm25, %%zmm25\n\t"
      "vpaddd %%zmm25, %%zmm12, %%zmm12\n\t"
      "vpxord %%zmm1, %%zmm24, %%zmm26\n\t"
      "vpopcntd %%zmm26, %%zmm26\n\t"
      "vpaddd %%zmm26, %%zmm13, %%zmm13\n\t"
      "vpxord %%zmm2, %%zmm24, %%zmm27\n\t"
      "vpopcntd %%zmm27, %%zmm27\n\t"
      "vpaddd %%zmm27, %%zmm14, %%zmm14\n\t"
      "vpxord %%zmm3, %%zmm24, %%zmm28\n\t"
      "vpopcntd %%zmm28, %%zmm28\n\t"
      "vpaddd %%zmm28, %%zmm15, %%zmm15\n\t"
      "vpxord %%zmm4, %%zmm24, %%zmm29\n\t"
      "vpopcntd %%zmm29, %%zmm29\n\t"
      "vpaddd %%zmm29, %%zmm16, %%zmm16\n\t"
      "vpxord %%zmm5, %%zmm24, %%zmm30\n\t"
      "vpopcntd %%zmm30, %%zmm30\n\t"
      "vpaddd %%zmm30, %%zmm17, %%zmm17\n\t"
      "vpxord %%zmm6, %%zmm24, %%zmm31\n\t"
      "vpopcntd %%zmm31, %%zmm31\n\t"
      "vpaddd %%zmm31, %%zmm18, %%zmm18\n\t"
      "vpxord %%zmm7, %%zmm24, %%zmm25\n\t"
      "vpopcntd %%zmm25, %%zmm25\n\t"
      "vpaddd %%zmm25, %%zmm19, %%zmm19\n\t"
      "vpxord %%zmm8, %%zmm24, %%zmm26\n\t"
      "vpopcntd %%zmm26, %%zmm26\n\t"
      "vpaddd %%zmm26, %%zmm20, %%zmm20\n\t"
      "vpxord %%zmm9, %%zmm24, %%zmm27\n\t"
      "vpopcntd %%zmm27, %%zmm27\n\t"
      "vpaddd %%zmm27, %%zmm21, %%zmm21\n\t"
      "vpxord %%zmm10, %%zmm24, %%zmm28\n\t"
      "vpopcntd %%zmm28, %%zmm28\n\t"
      "vpaddd %%zmm28, %%zmm22, %%zmm22\n\t"
      "vpxord %%zmm11, %%zmm24, %%zmm29\n\t"
      "vpopcntd %%zmm29, %%zmm29\n\t"
      "vpaddd %%zmm29, %%zmm23, %%zmm23\n\t"
      "dec %[n]\n\t"
      "jnz 1b\n\t"
      "vpaddd %%zmm13, %%zmm12, %%zmm12\n\t"
      "vpaddd %%zmm15, %%zmm14, %%zmm14\n\t"
      "vpaddd %%zmm17, %%zmm16, %%zmm16\n\t"
      "vpaddd %%zmm19, %%zmm18, %%zmm18\n\t"
      "vpaddd %%zmm21, %%zmm20, %%zmm20\n\t"
      "vpaddd %%zmm23, %%zmm22, %%zmm22\n\t"
      "vpaddd %%zmm14, %%zmm12, %%zmm12\n\t"
      "vpaddd %%zmm18, %%zmm16, %%zmm16\n\t"
      "vpaddd %%zmm22, %%zmm20, %%zmm20\n\t"
      "vpaddd %%zmm16, %%zmm12, %%zmm12\n\t"
      "vpaddd %%zmm20, %%zmm12, %%zmm12\n\t"
      "vmovdqa32 %%zmm12, 0(%[out])\n\t"
      "vzeroupper\n\t"
      : [n] "+r"(iterations)
      : [seed] "r"(seed), [out] "r"(out)
      : "memory", "cc", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8",
        "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "xmm16", "xmm17", "xmm18",
        "xmm19", "xmm20", "xmm21", "xmm22", "xmm23", "xmm24", "xmm25", "xmm26", "xmm27", "xmm28",
        "xmm29", "xmm30", "xmm31");
  uint64_t total = 0;
  for (uint32_t v : out) total += v;
  return total;
}
constexpr uint64_t kAvx512MacsPerIteration = uint64_t{512} * kAccZmm;

// ---- AVX2: nibble-table popcount -------------------------------------------
constexpr int kAccYmm = 4;
constexpr int kAvx2Inner = 15;  // byte counters: 15 * 8 = 120 < 256

__attribute__((target("avx2"))) uint64_t RunAvx2(uint64_t iterations) {
  const __m256i table = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                         0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
  const __m256i low_mask = _mm256_set1_epi8(0x0f);
  __m256i a[kAccYmm];
  __m256i acc64[kAccYmm];
  PEAK_UNROLL
  for (int j = 0; j < kAccYmm; ++j) {
    a[j] = _mm256_set1_epi32(static_cast<int>(0x9e3779b9u * (j + 1)));
    acc64[j] = _mm256_setzero_si256();
  }
  __m256i w = _mm256_set1_epi32(0x5bd1e995);
  for (uint64_t i = 0; i < iterations; ++i) {
    __m256i acc8[kAccYmm];
    PEAK_UNROLL
    for (int j = 0; j < kAccYmm; ++j) acc8[j] = _mm256_setzero_si256();
    for (int k = 0; k < kAvx2Inner; ++k) {
      PEAK_UNROLL
      for (int j = 0; j < kAccYmm; ++j) {
        Clobber(a[j]);
        const __m256i x = _mm256_xor_si256(a[j], w);
        const __m256i lo = _mm256_shuffle_epi8(table, _mm256_and_si256(x, low_mask));
        const __m256i hi =
            _mm256_shuffle_epi8(table, _mm256_and_si256(_mm256_srli_epi16(x, 4), low_mask));
        acc8[j] = _mm256_add_epi8(acc8[j], _mm256_add_epi8(lo, hi));
      }
      Clobber(w);
    }
    PEAK_UNROLL
    for (int j = 0; j < kAccYmm; ++j) {
      acc64[j] = _mm256_add_epi64(acc64[j], _mm256_sad_epu8(acc8[j], _mm256_setzero_si256()));
    }
  }
  __m256i total = acc64[0];
  for (int j = 1; j < kAccYmm; ++j) total = _mm256_add_epi64(total, acc64[j]);
  alignas(32) uint64_t lanes[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), total);
  return lanes[0] + lanes[1] + lanes[2] + lanes[3];
}
constexpr uint64_t kAvx2MacsPerIteration = uint64_t{256} * kAccYmm * kAvx2Inner;

// ---- scalar popcnt -----------------------------------------------------------
constexpr int kAccGpr = 8;

__attribute__((target("popcnt"))) uint64_t RunScalar(uint64_t iterations) {
  uint64_t a[kAccGpr];
  uint64_t acc[kAccGpr];
  PEAK_UNROLL
  for (int j = 0; j < kAccGpr; ++j) {
    a[j] = 0x9e3779b97f4a7c15ull * (j + 1);
    acc[j] = 0;
  }
  uint64_t w = 0x5bd1e9955bd1e995ull;
  for (uint64_t i = 0; i < iterations; ++i) {
    PEAK_UNROLL
    for (int j = 0; j < kAccGpr; ++j) {
      ClobberGpr(a[j]);
      acc[j] += static_cast<uint64_t>(__builtin_popcountll(a[j] ^ w));
    }
    ClobberGpr(w);
  }
  uint64_t total = 0;
  for (int j = 0; j < kAccGpr; ++j) total += acc[j];
  return total;
}
constexpr uint64_t kScalarMacsPerIteration = uint64_t{64} * kAccGpr;

// ---- driver ------------------------------------------------------------------
struct Path {
  const char* name;
  int bits;
  bool available;
  uint64_t (*run)(uint64_t);
  uint64_t macs_per_iteration;
};

double Seconds(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// Wall time of `threads` threads each running `iterations` iterations.
double TimeRun(const Path& path, int threads, uint64_t iterations) {
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&] {
      ready.fetch_add(1);
      while (!go.load(std::memory_order_acquire)) {
      }
      g_sink.fetch_add(path.run(iterations));
    });
  }
  while (ready.load() < threads) {
  }
  const auto start = std::chrono::steady_clock::now();
  go.store(true, std::memory_order_release);
  for (auto& th : pool) th.join();
  return Seconds(start, std::chrono::steady_clock::now());
}

double MeasurePath(const Path& path, int threads, double seconds, int repetitions) {
  // Calibrate the iteration count on one thread.
  uint64_t iterations = 1000;
  for (;;) {
    const auto start = std::chrono::steady_clock::now();
    g_sink.fetch_add(path.run(iterations));
    const double elapsed = Seconds(start, std::chrono::steady_clock::now());
    if (elapsed > 0.02) {
      iterations = static_cast<uint64_t>(iterations * seconds / elapsed) + 1;
      break;
    }
    iterations *= 4;
  }
  double best = 0.0;
  for (int r = 0; r < repetitions; ++r) {
    const double elapsed = TimeRun(path, threads, iterations);
    const double rate =
        static_cast<double>(path.macs_per_iteration) * iterations * threads / elapsed;
    if (rate > best) best = rate;
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 1;
  const double seconds = argc > 2 ? std::atof(argv[2]) : 0.15;
  const int repetitions = argc > 3 ? std::atoi(argv[3]) : 5;
  if (threads < 1 || seconds <= 0.0 || repetitions < 1) {
    std::fprintf(stderr, "usage: %s [threads>=1] [seconds>0] [repetitions>=1]\n", argv[0]);
    return 2;
  }
  __builtin_cpu_init();
  const Path paths[] = {
      {"avx512_vpopcntdq", 512,
       __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vpopcntdq"), RunAvx512,
       kAvx512MacsPerIteration},
      {"avx2", 256, static_cast<bool>(__builtin_cpu_supports("avx2")), RunAvx2,
       kAvx2MacsPerIteration},
      {"scalar", 64, static_cast<bool>(__builtin_cpu_supports("popcnt")), RunScalar,
       kScalarMacsPerIteration},
  };
  std::string best_name = "none";
  double best_rate = 0.0;
  for (const Path& path : paths) {
    if (!path.available) continue;
    const double rate = MeasurePath(path, threads, seconds, repetitions);
    std::printf("path=%s threads=%d bits=%d binary_macs_per_s=%.6e\n", path.name, threads,
                path.bits, rate);
    if (rate > best_rate) {
      best_rate = rate;
      best_name = path.name;
    }
  }
  std::printf("best=%s binary_macs_per_s=%.6e\n", best_name.c_str(), best_rate);
  std::fprintf(stderr, "(sink %llu)\n", static_cast<unsigned long long>(g_sink.load()));
  return best_rate > 0.0 ? 0 : 1;
}
