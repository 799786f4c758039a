// liblowbit_bench (CMake target lowbit_bench, -DLOWBIT_BUILD_BENCH=ON; built on
// request by benchmarks/bench_common.py, never shipped in a wheel).
// Kernel-level timing for benchmarks/bconv2d_benchmark.py: the core's BGemm
// and BConv2D run in a C++ loop on random packed data with the library's
// thread pool (core/thread_pool.h, as the delegate uses it; this library
// links its own copy of the core, built with the same flags), so that the
// figures exclude every framework cost (a TF op's dispatch, a TFLite
// invoke() from Python, bit-packing a float input). Also the read bandwidth
// of a buffer, for the memory-bound ceiling of a layer whose weights stream
// from the cache hierarchy once per call (a batch-1 dense layer).
//
// C ABI, called through ctypes; each function fills `samples` timings and
// returns 0, or returns 1 with a message in `error` (error_size bytes) for
// arguments the core rejects:
//   lowbit_kernel_bench_bgemm(rows, channels_in, out_channels, ...)
//       seconds per BGemm call (float output, no activation);
//   lowbit_kernel_bench_bconv2d(batch, height, width, channels_in, out_channels,
//                               kernel_size, same_padding, pad_value, bitpacked, ...)
//       seconds per BConv2D call (stride 1, float output), or BConv2DBitpacked
//       (bitpacked = 1);
//   lowbit_kernel_bench_bdepthwise(batch, height, width, channels, kernel_size,
//                                  stride, same_padding, pad_value, bitpacked,
//                                  float_input, ...)
//       seconds per BDepthwiseConv2D call on a packed input (float output),
//       or BDepthwiseConv2DBitpacked (bitpacked = 1), depth multiplier 1, on
//       the layer's BDepthwisePlan built once (as the ops keep it); with
//       float_input = 1 their FloatInput twins on a float input (standard
//       normal values, 64-byte aligned as the ops' tensors);
//   lowbit_kernel_bench_read(bytes, ...)
//       seconds per read of every byte of a buffer of that size, hot in
//       the caches it fits (read as wide as the CPU allows: AVX-512, AVX2,
//       else 64-bit words);
//   lowbit_kernel_bench_write(bytes, ...)
//       the same for writing every byte (one store per 64 bytes with
//       AVX-512: what a kernel's float output costs at the least).
// The common trailing arguments: threads (of the pool), sample_seconds (the
// iteration count is calibrated so that one sample lasts about that long),
// samples, seconds_per_call (out, `samples` values).
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "custom_ops/core/bconv2d.h"
#include "custom_ops/core/bconv2d_bitpacked.h"
#include "custom_ops/core/bconv2d_kernels.h"
#include "custom_ops/core/bdepthwise.h"
#include "custom_ops/core/bgemm.h"
#include "custom_ops/core/cpu_features.h"
#include "custom_ops/core/thread_pool.h"

#if LOWBIT_X86_SIMD
#include <immintrin.h>
#endif

namespace lowbit {
namespace {

constexpr int kMaxThreads = 1024;
constexpr int kMaxSamples = 1000;

// 0 for ok, else 1 with the message copied to `error`.
int Report(const Status& status, char* error, int error_size) {
  if (status.ok) return 0;
  if (error != nullptr && error_size > 0) {
    std::snprintf(error, static_cast<std::size_t>(error_size), "%s", status.message.c_str());
  }
  return 1;
}

Status CheckTiming(int threads, double sample_seconds, int samples, const double* out) {
  if (threads < 1 || threads > kMaxThreads) {
    return Status::Error("threads must be in [1, " + std::to_string(kMaxThreads) + "], got " +
                         std::to_string(threads));
  }
  if (!(sample_seconds > 0.0 && sample_seconds <= 10.0)) {
    return Status::Error("sample_seconds must be in (0, 10], got " +
                         std::to_string(sample_seconds));
  }
  if (samples < 1 || samples > kMaxSamples || out == nullptr) {
    return Status::Error("samples must be in [1, " + std::to_string(kMaxSamples) +
                         "] with an output array, got " + std::to_string(samples));
  }
  return Status::Ok();
}

double Elapsed(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Runs `call` once to warm up (caches, pool threads, lazily allocated
// scratch), sizes a sample to about sample_seconds, then writes the seconds
// per call of each sample.
void TimeSamples(const std::function<void()>& call, double sample_seconds, int samples,
                 double* seconds_per_call) {
  call();
  std::int64_t iterations = 1;
  for (;;) {
    const auto start = std::chrono::steady_clock::now();
    for (std::int64_t i = 0; i < iterations; ++i) call();
    const double t = Elapsed(start);
    if (t >= 0.2 * sample_seconds || iterations >= (std::int64_t{1} << 30)) {
      const double per_call = t / static_cast<double>(iterations);
      iterations = static_cast<std::int64_t>(sample_seconds / (per_call > 1e-9 ? per_call : 1e-9));
      if (iterations < 1) iterations = 1;
      break;
    }
    iterations *= 4;
  }
  for (int s = 0; s < samples; ++s) {
    const auto start = std::chrono::steady_clock::now();
    for (std::int64_t i = 0; i < iterations; ++i) call();
    seconds_per_call[s] = Elapsed(start) / static_cast<double>(iterations);
  }
}

std::vector<PackedWord> RandomWords(std::int64_t count, std::mt19937& rng) {
  std::vector<PackedWord> words(static_cast<std::size_t>(count));
  for (PackedWord& w : words) w = static_cast<PackedWord>(rng());
  return words;
}

std::vector<float> RandomFloats(std::int64_t count, float lo, float hi, std::mt19937& rng) {
  std::vector<float> values(static_cast<std::size_t>(count));
  std::uniform_real_distribution<float> dist(lo, hi);
  for (float& v : values) v = dist(rng);
  return values;
}

// XOR of every 64-byte line of [data, data + lines * 64): 8 independent
// chains (loads, not the XORs, are the limit).
#if LOWBIT_X86_SIMD
__attribute__((target("avx512f"))) std::uint64_t ReadLinesAvx512(const std::uint8_t* data,
                                                                 std::int64_t lines) {
  __m512i acc[8];
  for (__m512i& a : acc) a = _mm512_setzero_si512();
  std::int64_t i = 0;
  for (; i + 8 <= lines; i += 8) {
    for (int u = 0; u < 8; ++u) {
      acc[u] = _mm512_xor_si512(acc[u], _mm512_load_si512(data + (i + u) * 64));
    }
  }
  for (; i < lines; ++i) acc[0] = _mm512_xor_si512(acc[0], _mm512_load_si512(data + i * 64));
  for (int u = 1; u < 8; ++u) acc[0] = _mm512_xor_si512(acc[0], acc[u]);
  alignas(64) std::uint64_t lanes[8];
  _mm512_store_si512(lanes, acc[0]);
  return lanes[0] ^ lanes[1] ^ lanes[2] ^ lanes[3] ^ lanes[4] ^ lanes[5] ^ lanes[6] ^ lanes[7];
}

__attribute__((target("avx2"))) std::uint64_t ReadLinesAvx2(const std::uint8_t* data,
                                                            std::int64_t lines) {
  const auto* v = reinterpret_cast<const __m256i*>(data);  // 2 per line
  __m256i acc[8];
  for (__m256i& a : acc) a = _mm256_setzero_si256();
  std::int64_t i = 0;
  for (; i + 8 <= 2 * lines; i += 8) {
    for (int u = 0; u < 8; ++u) acc[u] = _mm256_xor_si256(acc[u], _mm256_load_si256(v + i + u));
  }
  for (; i < 2 * lines; ++i) acc[0] = _mm256_xor_si256(acc[0], _mm256_load_si256(v + i));
  for (int u = 1; u < 8; ++u) acc[0] = _mm256_xor_si256(acc[0], acc[u]);
  return static_cast<std::uint64_t>(_mm256_extract_epi64(acc[0], 0)) ^
         static_cast<std::uint64_t>(_mm256_extract_epi64(acc[0], 3));
}
#endif

std::uint64_t ReadLinesScalar(const std::uint8_t* data, std::int64_t lines) {
  const auto* words = reinterpret_cast<const std::uint64_t*>(data);
  std::uint64_t acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (std::int64_t i = 0; i < lines * 8; i += 8) {
    for (int u = 0; u < 8; ++u) acc[u] ^= words[i + u];
  }
  return acc[0] ^ acc[1] ^ acc[2] ^ acc[3] ^ acc[4] ^ acc[5] ^ acc[6] ^ acc[7];
}

using ReadLinesFn = std::uint64_t (*)(const std::uint8_t*, std::int64_t);

ReadLinesFn SelectReadLines() {
#if LOWBIT_X86_SIMD
  const CpuFeatures cpu = DetectCpuFeatures();
  if (cpu.Has(kCpuAvx512Bw)) return ReadLinesAvx512;
  if (cpu.Has(kCpuAvx2)) return ReadLinesAvx2;
#endif
  return ReadLinesScalar;
}

// Stores `value` to every 64-byte line of [data, data + lines * 64), one
// vector store per line where the CPU allows (as the kernels' float output:
// each line read for ownership from wherever it is, then written back).
#if LOWBIT_X86_SIMD
__attribute__((target("avx512f"))) void WriteLinesAvx512(std::uint8_t* data, std::int64_t lines,
                                                         std::uint8_t value) {
  const __m512i v = _mm512_set1_epi8(static_cast<char>(value));
  for (std::int64_t i = 0; i < lines; ++i) _mm512_store_si512(data + i * 64, v);
}

__attribute__((target("avx2"))) void WriteLinesAvx2(std::uint8_t* data, std::int64_t lines,
                                                    std::uint8_t value) {
  const __m256i v = _mm256_set1_epi8(static_cast<char>(value));
  for (std::int64_t i = 0; i < 2 * lines; ++i) {
    _mm256_store_si256(reinterpret_cast<__m256i*>(data) + i, v);
  }
}
#endif

void WriteLinesScalar(std::uint8_t* data, std::int64_t lines, std::uint8_t value) {
  auto* words = reinterpret_cast<std::uint64_t*>(data);
  const std::uint64_t v = 0x0101010101010101u * value;
  for (std::int64_t i = 0; i < lines * 8; ++i) words[i] = v;
}

using WriteLinesFn = void (*)(std::uint8_t*, std::int64_t, std::uint8_t);

WriteLinesFn SelectWriteLines() {
#if LOWBIT_X86_SIMD
  const CpuFeatures cpu = DetectCpuFeatures();
  if (cpu.Has(kCpuAvx512Bw)) return WriteLinesAvx512;
  if (cpu.Has(kCpuAvx2)) return WriteLinesAvx2;
#endif
  return WriteLinesScalar;
}

// The buffer of lowbit_kernel_bench_read / _write: `bytes` (whole lines, at
// least one, at most 2^32) 64-byte aligned in `storage`; null and `s` set
// when `bytes` or the timing arguments are out of range.
std::uint8_t* LineBuffer(std::int64_t bytes, int threads, double sample_seconds, int samples,
                         double* seconds_per_call, std::vector<std::uint8_t>* storage,
                         Status* s) {
  constexpr std::int64_t kLine = 64;
  constexpr std::int64_t kMaxBytes = std::int64_t{1} << 32;
  *s = bytes < kLine || bytes > kMaxBytes
           ? Status::Error("bytes must be in [64, 2^32], got " + std::to_string(bytes))
           : CheckTiming(threads, sample_seconds, samples, seconds_per_call);
  if (!s->ok) return nullptr;
  // Whole lines (one spare line to align the start).
  storage->assign(static_cast<std::size_t>((bytes / kLine + 1) * kLine), 0x5a);
  return storage->data() +
         (kLine - reinterpret_cast<std::uintptr_t>(storage->data()) % kLine) % kLine;
}

}  // namespace
}  // namespace lowbit

#define LOWBIT_C_API extern "C" __attribute__((visibility("default")))

LOWBIT_C_API int lowbit_kernel_bench_bgemm(std::int64_t rows, std::int64_t channels_in,
                                           std::int64_t out_channels, int threads,
                                           double sample_seconds, int samples,
                                           double* seconds_per_call, char* error,
                                           int error_size) {
  using namespace lowbit;  // NOLINT
  BGemmParams p;
  p.rows = rows;
  p.channels_in = channels_in;
  p.out_channels = out_channels;
  Status s = CheckBGemmShape(p);
  if (s.ok) s = CheckTiming(threads, sample_seconds, samples, seconds_per_call);
  if (!s.ok) return Report(s, error, error_size);
  std::mt19937 rng(1234);
  const std::vector<PackedWord> input = RandomWords(rows * p.words(), rng);
  const std::vector<PackedWord> compact = RandomWords(out_channels * p.words(), rng);
  const std::vector<float> multiplier = RandomFloats(out_channels, 0.5f, 2.0f, rng);
  const std::vector<float> bias = RandomFloats(out_channels, -1.0f, 1.0f, rng);
  std::vector<float> output(static_cast<std::size_t>(rows * out_channels));
  BConv2DFilter filter;
  filter.Prepare(SelectBConv2DKernel(), p.AsConv2D(), compact.data());
  ThreadPool pool(threads);
  TimeSamples(
      [&] {
        BGemm(p, input.data(), filter, multiplier.data(), bias.data(), output.data(), pool);
      },
      sample_seconds, samples, seconds_per_call);
  return 0;
}

LOWBIT_C_API int lowbit_kernel_bench_bconv2d(std::int64_t batch, std::int64_t height,
                                             std::int64_t width, std::int64_t channels_in,
                                             std::int64_t out_channels, std::int64_t kernel_size,
                                             int same_padding, int pad_value, int bitpacked,
                                             int threads, double sample_seconds, int samples,
                                             double* seconds_per_call, char* error,
                                             int error_size) {
  using namespace lowbit;  // NOLINT
  BConv2DParams p;
  p.batch = batch;
  p.in_h = height;
  p.in_w = width;
  p.channels_in = channels_in;
  p.out_channels = out_channels;
  p.kernel_h = p.kernel_w = kernel_size;
  p.padding = same_padding ? Padding::kSame : Padding::kValid;
  p.pad_value = pad_value;
  Status s = ComputeBConv2DGeometry(&p);
  if (s.ok) s = CheckTiming(threads, sample_seconds, samples, seconds_per_call);
  if (!s.ok) return Report(s, error, error_size);
  std::mt19937 rng(1234);
  const std::vector<PackedWord> input = RandomWords(batch * height * width * p.words(), rng);
  const std::vector<PackedWord> compact = RandomWords(
      out_channels * CompactFilterWords(p.kernel_h, p.kernel_w, channels_in), rng);
  const std::vector<float> multiplier = RandomFloats(out_channels, 0.5f, 2.0f, rng);
  const std::vector<float> bias = RandomFloats(out_channels, -1.0f, 1.0f, rng);
  const std::int64_t pixels = batch * p.out_h * p.out_w;
  std::vector<float> output(static_cast<std::size_t>(pixels * out_channels));
  std::vector<PackedWord> output_bits(static_cast<std::size_t>(pixels * PackedWords(out_channels)));
  std::vector<std::int32_t> threshold(static_cast<std::size_t>(out_channels));
  std::vector<std::uint8_t> flip(static_cast<std::size_t>(out_channels));
  s = ComputeBConv2DThresholds(p, multiplier.data(), bias.data(), threshold.data(), flip.data());
  if (!s.ok) return Report(s, error, error_size);
  BConv2DFilter filter;
  filter.Prepare(SelectBConv2DKernel(), p, compact.data());
  ThreadPool pool(threads);
  TimeSamples(
      [&] {
        if (bitpacked) {
          BConv2DBitpacked(p, input.data(), filter, threshold.data(), flip.data(),
                           output_bits.data(), pool);
        } else {
          BConv2D(p, input.data(), filter, multiplier.data(), bias.data(), output.data(), pool);
        }
      },
      sample_seconds, samples, seconds_per_call);
  return 0;
}

LOWBIT_C_API int lowbit_kernel_bench_bdepthwise(std::int64_t batch, std::int64_t height,
                                                std::int64_t width, std::int64_t channels,
                                                std::int64_t kernel_size, std::int64_t stride,
                                                int same_padding, int pad_value, int bitpacked,
                                                int float_input, int threads,
                                                double sample_seconds, int samples,
                                                double* seconds_per_call, char* error,
                                                int error_size) {
  using namespace lowbit;  // NOLINT
  BDepthwiseConv2DParams p;
  p.batch = batch;
  p.in_h = height;
  p.in_w = width;
  p.channels_in = channels;
  p.kernel_h = p.kernel_w = kernel_size;
  p.stride_h = p.stride_w = stride;
  p.padding = same_padding ? Padding::kSame : Padding::kValid;
  p.pad_value = pad_value;
  Status s = ComputeBDepthwiseConv2DGeometry(&p);
  if (s.ok) s = CheckTiming(threads, sample_seconds, samples, seconds_per_call);
  if (!s.ok) return Report(s, error, error_size);
  std::mt19937 rng(1234);
  const std::vector<PackedWord> input = RandomWords(batch * height * width * p.in_words(), rng);
  const std::vector<PackedWord> filter = RandomWords(DepthwiseFilterWords(p), rng);
  const std::vector<float> multiplier = RandomFloats(channels, 0.5f, 2.0f, rng);
  const std::vector<float> bias = RandomFloats(channels, -1.0f, 1.0f, rng);
  const std::int64_t pixels = batch * p.out_h * p.out_w;
  // 64-byte aligned, as TF and TFLite allocate tensors (a zmm store across
  // two cache lines costs two).
  std::vector<float> output_storage(static_cast<std::size_t>(pixels * channels + 16));
  float* const output = output_storage.data() +
                        (16 - reinterpret_cast<std::uintptr_t>(output_storage.data()) % 64 / 4) % 16;
  std::vector<PackedWord> output_bits(static_cast<std::size_t>(pixels * p.out_words()));
  std::vector<std::int32_t> threshold(static_cast<std::size_t>(channels));
  std::vector<std::uint8_t> flip(static_cast<std::size_t>(channels));
  s = ComputeBDepthwiseThresholds(p, multiplier.data(), bias.data(), threshold.data(),
                                  flip.data());
  if (!s.ok) return Report(s, error, error_size);
  // The float input (when asked for), aligned like `output`, and the packed
  // copy the kernel may need (BDepthwiseConv2DFloatInput's scratch).
  const std::int64_t floats = float_input ? batch * height * width * channels : 0;
  std::vector<float> float_storage(static_cast<std::size_t>(floats + 16));
  float* const float_in = float_storage.data() +
                          (16 - reinterpret_cast<std::uintptr_t>(float_storage.data()) % 64 / 4) %
                              16;
  std::normal_distribution<float> normal;
  for (std::int64_t i = 0; i < floats; ++i) float_in[i] = normal(rng);
  std::vector<PackedWord> scratch(float_input ? input.size() : 0);
  BDepthwisePlan plan;
  plan.Prepare(SelectBConv2DKernel(), p, filter.data(), threshold.data(), flip.data());
  ThreadPool pool(threads);
  TimeSamples(
      [&] {
        if (bitpacked && float_input) {
          BDepthwiseConv2DBitpackedFloatInput(plan, float_in, scratch.data(), output_bits.data(),
                                              pool);
        } else if (bitpacked) {
          BDepthwiseConv2DBitpacked(plan, input.data(), output_bits.data(), pool);
        } else if (float_input) {
          BDepthwiseConv2DFloatInput(plan, float_in, scratch.data(), multiplier.data(),
                                     bias.data(), output, pool);
        } else {
          BDepthwiseConv2D(plan, input.data(), multiplier.data(), bias.data(), output, pool);
        }
      },
      sample_seconds, samples, seconds_per_call);
  return 0;
}

LOWBIT_C_API int lowbit_kernel_bench_read(std::int64_t bytes, int threads, double sample_seconds,
                                          int samples, double* seconds_per_call, char* error,
                                          int error_size) {
  using namespace lowbit;  // NOLINT
  constexpr std::int64_t kLine = 64;
  std::vector<std::uint8_t> storage;
  Status s;
  const std::uint8_t* data =
      LineBuffer(bytes, threads, sample_seconds, samples, seconds_per_call, &storage, &s);
  if (!s.ok) return Report(s, error, error_size);
  const std::int64_t lines = bytes / kLine;
  const ReadLinesFn read_lines = SelectReadLines();
  ThreadPool pool(threads);
  // A pass splits the lines over the pool like a kernel's ParallelFor; each
  // chunk's result goes to a sink so that the reads cannot be dropped.
  std::atomic<std::uint64_t> sink{0};
  TimeSamples(
      [&] {
        pool.ParallelFor(lines, kLine, [&](std::int64_t begin, std::int64_t end) {
          sink.fetch_xor(read_lines(data + begin * kLine, end - begin),
                         std::memory_order_relaxed);
        });
      },
      sample_seconds, samples, seconds_per_call);
  return 0;
}

LOWBIT_C_API int lowbit_kernel_bench_write(std::int64_t bytes, int threads,
                                           double sample_seconds, int samples,
                                           double* seconds_per_call, char* error,
                                           int error_size) {
  using namespace lowbit;  // NOLINT
  constexpr std::int64_t kLine = 64;
  std::vector<std::uint8_t> storage;
  Status s;
  std::uint8_t* data =
      LineBuffer(bytes, threads, sample_seconds, samples, seconds_per_call, &storage, &s);
  if (!s.ok) return Report(s, error, error_size);
  const std::int64_t lines = bytes / kLine;
  const WriteLinesFn write_lines = SelectWriteLines();
  ThreadPool pool(threads);
  std::uint8_t pass = 0;  // a new value per pass: every pass writes
  TimeSamples(
      [&] {
        ++pass;
        pool.ParallelFor(lines, kLine, [&](std::int64_t begin, std::int64_t end) {
          write_lines(data + begin * kLine, end - begin, pass);
        });
      },
      sample_seconds, samples, seconds_per_call);
  return 0;
}
