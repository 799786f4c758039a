// Check of the int8 conv over few input channels (core/int8_conv2d.h):
//  * MultiplyByQuantizedMultiplier against the reference's definition written
//    out literally (nudge 2^30 or 1 - 2^30, division truncating toward zero,
//    then the rounding divide), on edge values (INT32_MIN/MAX, halves, every
//    shift from -31 to 30);
//  * the fast kernels (AVX-512 VNNI where this CPU has it; NEON on Arm, and
//    its SDOT variant where the CPU has the dot product; the first line
//    names the paths checked, the second whether Int8Conv2D takes a fast
//    one) and the portable loop against a naive loop nest here, on random
//    shapes: 1-8 input channels, 1-40 output channels (block tails), kernels
//    1-7, strides, dilations, both paddings, batches, zero points -128 and
//    127, saturating
//    and large accumulators (weights +-127, inputs at the extremes), 1 and 2
//    threads; then a sweep of every kernel row of 1-5 taps over 1-8 channels
//    (the zero weights past a row's bytes, the unrolled shapes, the 64-byte
//    stores of 16 channels, ReLU clamps; see main).
//     int8_conv2d_check [cases]    exit status 0 and "OK <n> cases, <m> sweep cases"
//     int8_conv2d_check --time     times QuickNet's stem (224x224x3 -> 16, 3x3 s2)
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "custom_ops/core/int8_conv2d.h"
#include "custom_ops/core/thread_pool.h"

namespace {

using lowbit::Int8Conv2DParams;
using lowbit::Int8Conv2DPlan;

// TFLite's double-rounding definition, literally.
std::int32_t LiteralMultiply(std::int32_t x, std::int32_t q, int shift) {
  const int left = shift > 0 ? shift : 0, right = shift > 0 ? 0 : -shift;
  const std::int32_t a = static_cast<std::int32_t>(static_cast<std::uint32_t>(x) << left);
  std::int32_t high;
  if (a == q && a == std::numeric_limits<std::int32_t>::min()) {
    high = std::numeric_limits<std::int32_t>::max();
  } else {
    const std::int64_t ab = static_cast<std::int64_t>(a) * q;
    const std::int64_t nudge = ab >= 0 ? (1LL << 30) : (1 - (1LL << 30));
    high = static_cast<std::int32_t>((ab + nudge) / (1LL << 31));  // truncates
  }
  const std::int64_t mask = (1LL << right) - 1;
  const std::int64_t remainder = high & mask;
  const std::int64_t threshold = (mask >> 1) + (high < 0 ? 1 : 0);
  return static_cast<std::int32_t>((high >> right) + (remainder > threshold ? 1 : 0));
}

bool CheckMultiply(std::mt19937& rng) {
  const std::int32_t edges[] = {0, 1, -1, 2, -2, std::numeric_limits<std::int32_t>::max(),
                                std::numeric_limits<std::int32_t>::min(), 1 << 30, -(1 << 30),
                                (1 << 30) + 1, 12345678, -12345678};
  std::uniform_int_distribution<std::int32_t> any(std::numeric_limits<std::int32_t>::min(),
                                                  std::numeric_limits<std::int32_t>::max());
  for (int shift = -31; shift <= 30; ++shift) {
    for (int trial = 0; trial < 400; ++trial) {
      const std::int32_t q = trial < 12 ? edges[trial] : any(rng);
      const std::int32_t x = trial < 12 ? edges[(trial * 7) % 12] : any(rng) >> (trial % 31);
      const std::int32_t qs[] = {q, std::numeric_limits<std::int32_t>::min(), 1 << 30};
      for (std::int32_t qq : qs) {
        if (lowbit::MultiplyByQuantizedMultiplier(x, qq, shift) != LiteralMultiply(x, qq, shift)) {
          std::printf("FAIL multiply x=%d q=%d shift=%d\n", x, qq, shift);
          return false;
        }
      }
    }
  }
  return true;
}

struct Case {
  Int8Conv2DParams p;
  std::vector<std::int8_t> input, filter;
  std::vector<std::int32_t> bias, multiplier;
  std::vector<int> shift;
  bool has_bias = true;
};

// The fields a sweep case fixes (0: random).
struct Fixed {
  int in_c = 0, kernel_h = 0, kernel_w = 0, stride_w = 0, out_c = 0;
  bool relu = false;  // out_min = output_zero_point (a ReLU's clamp)
};

Case RandomCase(std::mt19937& rng, int index, const Fixed& fixed = Fixed()) {
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  auto pick_or = [&](int value, int lo, int hi) { return value > 0 ? value : pick(lo, hi); };
  Case k;
  Int8Conv2DParams& p = k.p;
  p.batch = pick(1, 3);
  p.in_c = pick_or(fixed.in_c, 1, 8);
  p.out_c = pick_or(fixed.out_c, 1, 40);
  if (fixed.out_c == 0 && index % 5 == 0) p.out_c = 16;
  p.kernel_h = pick_or(fixed.kernel_h, 1, 7);
  p.kernel_w = pick_or(fixed.kernel_w, 1, 7);
  p.stride_h = pick(1, 3);
  p.stride_w = pick_or(fixed.stride_w, 1, 3);
  p.dilation_h = pick(1, 3);
  p.dilation_w = index % 3 == 0 || fixed.in_c > 0 ? 1 : pick(1, 3);
  p.in_h = pick(1, 20);
  // Sweeps: rows of 8-40 outputs (full steps of 8 pixels and a tail).
  p.in_w = fixed.in_c > 0 ? pick(8 * p.stride_w, 40 * p.stride_w) : pick(1, 20);
  bool same = pick(0, 1) == 1;
  const int eff_h = (p.kernel_h - 1) * p.dilation_h + 1, eff_w = (p.kernel_w - 1) * p.dilation_w + 1;
  if (p.in_h < eff_h || p.in_w < eff_w) same = true;  // VALID would be empty
  lowbit::ComputeInt8Conv2DGeometry(same, &p);
  const int zps[] = {-128, 127, 0, pick(-128, 127)};
  p.input_zero_point = zps[index % 4];
  p.output_zero_point = zps[(index / 4) % 4];
  p.out_min = fixed.relu ? p.output_zero_point : pick(-128, 0);
  p.out_max = pick(p.out_min, 127);
  const bool extreme = index % 7 == 0;  // inputs and weights at the extremes
  std::uniform_int_distribution<int> byte(-128, 127);
  k.input.resize(static_cast<std::size_t>(p.batch) * p.in_h * p.in_w * p.in_c);
  for (auto& v : k.input) v = static_cast<std::int8_t>(extreme ? (byte(rng) < 0 ? -128 : 127) : byte(rng));
  k.filter.resize(static_cast<std::size_t>(p.out_c) * p.kernel_h * p.kernel_w * p.in_c);
  for (auto& v : k.filter) {
    v = static_cast<std::int8_t>(extreme ? (byte(rng) < 0 ? -127 : 127) : std::max(-127, byte(rng)));
  }
  k.has_bias = index % 6 != 1;
  std::uniform_int_distribution<std::int32_t> bias(-(1 << 20), 1 << 20);
  for (int c = 0; c < p.out_c; ++c) {
    k.bias.push_back(index % 11 == 0 ? std::numeric_limits<std::int32_t>::max() - c : bias(rng));
    std::int32_t q;
    int s;
    // Multipliers from tiny (most outputs saturate low) to above 1.
    const double m = std::ldexp(std::uniform_real_distribution<double>(0.5, 1.0)(rng), pick(-36, 2));
    lowbit::QuantizeMultiplier(m, &q, &s);
    k.multiplier.push_back(q);
    k.shift.push_back(s);
  }
  return k;
}

std::vector<std::int8_t> Naive(const Case& k) {
  const Int8Conv2DParams& p = k.p;
  std::vector<std::int8_t> out(static_cast<std::size_t>(p.batch) * p.out_h * p.out_w * p.out_c);
  std::size_t at = 0;
  for (int b = 0; b < p.batch; ++b) {
    for (int oh = 0; oh < p.out_h; ++oh) {
      for (int ow = 0; ow < p.out_w; ++ow) {
        for (int c = 0; c < p.out_c; ++c) {
          std::int64_t acc = k.has_bias ? k.bias[c] : 0;
          for (int kh = 0; kh < p.kernel_h; ++kh) {
            for (int kw = 0; kw < p.kernel_w; ++kw) {
              const int ih = oh * p.stride_h - p.pad_top + kh * p.dilation_h;
              const int iw = ow * p.stride_w - p.pad_left + kw * p.dilation_w;
              if (ih < 0 || ih >= p.in_h || iw < 0 || iw >= p.in_w) continue;
              for (int i = 0; i < p.in_c; ++i) {
                const int x = k.input[((static_cast<std::size_t>(b) * p.in_h + ih) * p.in_w + iw) *
                                          p.in_c + i];
                const int w = k.filter[((static_cast<std::size_t>(c) * p.kernel_h + kh) *
                                            p.kernel_w + kw) * p.in_c + i];
                acc += static_cast<std::int64_t>(x - p.input_zero_point) * w;
              }
            }
          }
          // int32 accumulation wraps (the reference's int32 sums).
          const auto acc32 = static_cast<std::int32_t>(static_cast<std::uint32_t>(acc));
          const std::int64_t v =
              static_cast<std::int64_t>(LiteralMultiply(acc32, k.multiplier[c], k.shift[c])) +
              p.output_zero_point;
          out[at++] = static_cast<std::int8_t>(
              std::min<std::int64_t>(std::max<std::int64_t>(v, p.out_min), p.out_max));
        }
      }
    }
  }
  return out;
}

Int8Conv2DPlan MakePlan(const Case& k) {
  return Int8Conv2DPlan(k.p.out_c, k.p.kernel_h, k.p.kernel_w, k.p.in_c, k.filter.data(),
                        k.has_bias ? k.bias.data() : nullptr, k.multiplier.data(),
                        k.shift.data(), k.p.input_zero_point);
}

// One way to run the conv: its name in the reports and the entry point.
struct Path {
  const char* name;
  void (*run)(const Int8Conv2DPlan&, const Int8Conv2DParams&, const std::int8_t*, std::int8_t*,
              lowbit::ParallelExecutor&);
};

// The portable loop, and every fast kernel this CPU can run: AVX-512 VNNI
// where Int8Conv2DHasFastPath() on x86; NEON on any Arm build (it runs on
// every NEON CPU), its SDOT variant where the CPU has the dot product.
std::vector<Path> Paths() {
  std::vector<Path> paths{{"portable", &lowbit::Int8Conv2DPortable}};
#if LOWBIT_INT8_CONV_VNNI
  if (lowbit::Int8Conv2DHasFastPath()) paths.push_back({"avx512_vnni", &lowbit::Int8Conv2D});
#endif
#if LOWBIT_INT8_CONV_NEON
  paths.push_back({"neon", &lowbit::Int8Conv2DNeon});
#endif
#if LOWBIT_INT8_CONV_SDOT
  if (lowbit::Int8Conv2DHasSdot()) paths.push_back({"neon_sdot", &lowbit::Int8Conv2DNeonSdot});
#endif
  return paths;
}

// Each path (Paths), inline and on 2 threads, against
// Naive; prints the first difference.
bool CheckCase(const Case& k, int index, lowbit::InlineExecutor& inline_executor,
               lowbit::ThreadPool& pool) {
  const std::vector<std::int8_t> expected = Naive(k);
  const Int8Conv2DPlan plan = MakePlan(k);
  const std::vector<Path> paths = Paths();
  for (std::size_t run = 0; run < 2 * paths.size(); ++run) {
    const Path& path = paths[run / 2];
    lowbit::ParallelExecutor& executor =
        run % 2 == 0 ? static_cast<lowbit::ParallelExecutor&>(inline_executor) : pool;
    std::vector<std::int8_t> got(expected.size(), 0x55);
    path.run(plan, k.p, k.input.data(), got.data(), executor);
    if (got != expected) {
      std::size_t i = 0;
      while (got[i] == expected[i]) ++i;
      const Int8Conv2DParams& p = k.p;
      std::printf("FAIL case %d (%s, %s): n%d %dx%dx%d -> %dx%dx%d k%dx%d s%d,%d d%d,%d "
                  "pad %d,%d zp %d,%d range [%d, %d]: element %zu got %d expected %d\n",
                  index, path.name, run % 2 ? "2 threads" : "inline",
                  p.batch, p.in_h, p.in_w, p.in_c, p.out_h, p.out_w, p.out_c, p.kernel_h,
                  p.kernel_w, p.stride_h, p.stride_w, p.dilation_h, p.dilation_w, p.pad_top,
                  p.pad_left, p.input_zero_point, p.output_zero_point, p.out_min, p.out_max, i,
                  got[i], expected[i]);
      return false;
    }
  }
  return true;
}

int Time() {
  std::mt19937 rng(1);
  Case k;
  Int8Conv2DParams& p = k.p;
  p.batch = 1, p.in_h = p.in_w = 224, p.in_c = 3, p.out_c = 16, p.kernel_h = p.kernel_w = 3;
  p.stride_h = p.stride_w = 2, p.out_h = p.out_w = 112, p.pad_top = p.pad_left = 0;
  p.input_zero_point = -3, p.output_zero_point = -128, p.out_min = -128, p.out_max = 127;
  std::uniform_int_distribution<int> byte(-127, 127);
  k.input.resize(224 * 224 * 3);
  for (auto& v : k.input) v = static_cast<std::int8_t>(byte(rng));
  k.filter.resize(16 * 27);
  for (auto& v : k.filter) v = static_cast<std::int8_t>(byte(rng));
  for (int c = 0; c < 16; ++c) {
    k.bias.push_back(1000 * c);
    k.multiplier.push_back(1500000000);
    k.shift.push_back(-9);
  }
  const Int8Conv2DPlan plan = MakePlan(k);
  std::vector<std::int8_t> out(112 * 112 * 16);
  lowbit::InlineExecutor inline_executor;
  auto best_of = [&](bool fast) {
    double best = 1e9;
    for (int r = 0; r < 7; ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < 100; ++i) {
        if (fast) {
          lowbit::Int8Conv2D(plan, p, k.input.data(), out.data(), inline_executor);
        } else {
          lowbit::Int8Conv2DPortable(plan, p, k.input.data(), out.data(), inline_executor);
        }
      }
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
                                .count() / 100);
    }
    return best * 1e3;
  };
  std::printf("stem 224x224x3 -> 112x112x16, 3x3 s2, 1 thread: fast path (%s) %.3f ms, "
              "portable %.3f ms\n",
              !lowbit::Int8Conv2DHasFastPath() ? "none: portable"
              : LOWBIT_INT8_CONV_VNNI          ? "avx512_vnni"
              : lowbit::Int8Conv2DHasSdot()    ? "neon_sdot"
                                               : "neon",
              best_of(true), best_of(false));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::strcmp(argv[1], "--time") == 0) return Time();
  const int cases = argc > 1 ? std::atoi(argv[1]) : 300;
  std::mt19937 rng(12345);
  if (!CheckMultiply(rng)) return 1;
  lowbit::InlineExecutor inline_executor;
  lowbit::ThreadPool pool(2);
  std::printf("paths:");
  for (const Path& path : Paths()) std::printf(" %s", path.name);
  // Which of them Int8Conv2D (the delegate) takes on this CPU.
  std::printf("\nfast path: %s\n",
              lowbit::Int8Conv2DHasFastPath() ? "yes" : lowbit::Int8Conv2DNoFastPathReason());
  for (int index = 0; index < cases; ++index) {
    if (!CheckCase(RandomCase(rng, index), index, inline_executor, pool)) return 1;
  }
  // Every kernel row width of 1-5 taps over 1-8 channels (kernel_w * in_c
  // bytes from 1 to 40, most not a multiple of 4: the zero weights past a
  // row's taps meet a neighbouring pixel's bytes), 1 and 3 kernel rows
  // (the unrolled shapes), strides 1 and 2, 16 output channels (the 64-byte
  // stores) or 1-40, with and without a ReLU clamp (the skipped correction).
  int sweep = 0;
  for (int in_c = 1; in_c <= 8; ++in_c) {
    for (int kernel_w = 1; kernel_w <= 5; ++kernel_w) {
      for (int variant = 0; variant < 8; ++variant, ++sweep) {
        Fixed fixed;
        fixed.in_c = in_c;
        fixed.kernel_w = kernel_w;
        fixed.kernel_h = variant % 2 == 0 ? 3 : 1;
        fixed.stride_w = (variant / 2) % 2 + 1;
        fixed.relu = variant / 4 == 1;
        fixed.out_c = sweep % 3 == 0 ? 0 : 16;
        if (!CheckCase(RandomCase(rng, cases + sweep, fixed), cases + sweep, inline_executor,
                       pool)) {
          return 1;
        }
      }
    }
  }
  std::printf("OK %d cases, %d sweep cases\n", cases, sweep);
  return 0;
}
