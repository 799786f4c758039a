// Bit-exactness check of every binary-conv kernel this CPU can run against the
// reference kernel, on random shapes (channel tails, strides, dilations, both
// paddings and pad values, 1 and 2 threads), and of BGemm (float and bit-packed
// output) at rows 1..13, across each SIMD kernel's GEMV path for rows below its
// tile, and the bit-packed output of the convolution (BConv2DBitpacked: the
// x86 SIMD kernels threshold in their epilogue, the others pack a scratch) at
// the thresholds' edges and from multipliers and biases. A plain executable so that it also runs under qemu-user for the Arm
// builds (tests/core/test_cross_kernels.py):
//     bconv2d_check [cases]     exit status 0 and "OK <n> cases" on success
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include <cmath>
#include <limits>

#include "custom_ops/core/bconv2d.h"
#include "custom_ops/core/bconv2d_bitpacked.h"
#include "custom_ops/core/bgemm.h"
#include "custom_ops/core/bitpack.h"
#include "custom_ops/core/int8_io.h"
#include "custom_ops/core/kernel_table.h"
#include "custom_ops/core/thread_pool.h"

namespace {

using lowbit::BConv2DKernel;
using lowbit::BConv2DParams;
using lowbit::PackedWord;

// The kernels SelectBConv2DKernel will really run here: forcing each row of
// the kernel table (but the reference, the ground truth) and keeping those that
// are not replaced by a fallback.
std::vector<BConv2DKernel> RunnableKernels() {
  std::vector<BConv2DKernel> result;
  for (const lowbit::KernelPath& path : lowbit::KernelPaths()) {
    if (path.id == BConv2DKernel::kReference) continue;
    setenv("LOWBIT_KERNEL", path.name, 1);
    if (lowbit::SelectBConv2DKernel() == path.id) result.push_back(path.id);
  }
  unsetenv("LOWBIT_KERNEL");
  return result;
}

// -1 (bit 1) for negative normal numbers and -inf; zeros, subnormals and NaN
// are +1 (bit 0): the bit convention of docs/custom_ops.md, written with
// the C library's classification rather than bit patterns.
bool ExpectedBit(float x) {
  return (std::fpclassify(x) == FP_NORMAL || std::isinf(x)) && std::signbit(x);
}

// The packer of each kernel path (it follows LOWBIT_KERNEL) on random and
// special values, with channel tails.
bool CheckBitpack(const std::vector<BConv2DKernel>& kernels, std::mt19937& rng) {
  const float specials[] = {0.0f, -0.0f, 1e-45f, -1e-45f, -1e-39f, -1.2e-38f,
                            std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity(),
                            std::numeric_limits<float>::quiet_NaN(),
                            -std::numeric_limits<float>::quiet_NaN(), -3.5f, 2.0f,
                            // -FLT_MIN (bit 1) and the subnormal next to it (bit 0)
                            -std::numeric_limits<float>::min(),
                            -std::nextafter(std::numeric_limits<float>::min(), 0.0f)};
  constexpr int kSpecials = static_cast<int>(sizeof(specials) / sizeof(specials[0]));
  lowbit::InlineExecutor executor;
  for (int channels : {1, 31, 32, 33, 64, 100, 160, 256, 300}) {
    const int rows = 7;
    std::vector<float> x(static_cast<std::size_t>(rows * channels));
    for (float& v : x) {
      v = std::uniform_int_distribution<int>(0, 3)(rng) == 0
              ? specials[std::uniform_int_distribution<int>(0, kSpecials - 1)(rng)]
              : std::normal_distribution<float>()(rng);
    }
    const std::int64_t words = lowbit::PackedWords(channels);
    std::vector<PackedWord> expected(static_cast<std::size_t>(rows * words), 0);
    for (int r = 0; r < rows; ++r) {
      for (int c = 0; c < channels; ++c) {
        if (ExpectedBit(x[r * channels + c])) expected[r * words + c / 32] |= 1u << (c % 32);
      }
    }
    for (BConv2DKernel k : kernels) {
      setenv("LOWBIT_KERNEL", lowbit::BConv2DKernelName(k), 1);
      std::vector<PackedWord> actual(expected.size(), 0xdeadbeef);
      lowbit::BitpackRows(x.data(), rows, channels, actual.data(), executor);
      if (actual != expected) {
        std::printf("BITPACK MISMATCH kernel %s channels %d\n", lowbit::BConv2DKernelName(k),
                    channels);
        return false;
      }
    }
  }
  unsetenv("LOWBIT_KERNEL");
  return true;
}

// The packer of int8 codes (core/int8_io.h; SSE2 on x86, NEON on aarch64,
// else scalar) against bit b = code < zero_point: every zero point, codes at
// and around it and at the ends of the range, channel tails, garbage in the
// output words before the call.
bool CheckBitpackInt8(std::mt19937& rng) {
  lowbit::InlineExecutor executor;
  for (int channels : {1, 16, 31, 32, 33, 48, 64, 100, 256}) {
    const int rows = 5;
    const std::int64_t words = lowbit::PackedWords(channels);
    std::vector<std::int8_t> codes(static_cast<std::size_t>(rows * channels));
    for (int zp = -128; zp <= 127; zp += zp < -120 || zp > 120 ? 1 : 17) {
      for (std::int8_t& q : codes) {
        const int pick = std::uniform_int_distribution<int>(0, 5)(rng);
        const int near = zp + std::uniform_int_distribution<int>(-1, 1)(rng);
        const int value = pick == 0   ? -128
                          : pick == 1 ? 127
                          : pick <= 3 ? std::max(-128, std::min(127, near))
                                      : std::uniform_int_distribution<int>(-128, 127)(rng);
        q = static_cast<std::int8_t>(value);
      }
      std::vector<PackedWord> expected(static_cast<std::size_t>(rows * words), 0);
      for (int r = 0; r < rows; ++r) {
        for (int c = 0; c < channels; ++c) {
          if (codes[r * channels + c] < zp) expected[r * words + c / 32] |= 1u << (c % 32);
        }
      }
      std::vector<PackedWord> actual(expected.size(), 0xdeadbeef);
      lowbit::BitpackInt8Rows(codes.data(), rows, channels, zp, actual.data(), executor);
      if (actual != expected) {
        std::printf("INT8 BITPACK MISMATCH channels %d zero point %d\n", channels, zp);
        return false;
      }
    }
  }
  return true;
}

// BGemm with each kernel's prepared filter against the reference convolution
// (BGemm is that 1x1 convolution over rows): rows 1..13 (the GEMV path below
// each SIMD tile, the tile, a tile plus one), channel tails, N_out within one
// block up to several groups of blocks, word counts around the GEMV's unrolled
// word loop, garbage in the input's padding bits,
// both activations, 1 and 2 threads; and the bit-packed output against the
// signs of the reference output. Returns the number of cases, or -1.
int CheckBGemm(const std::vector<BConv2DKernel>& kernels, std::mt19937& rng) {
  auto uniform = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  lowbit::InlineExecutor inline_executor;
  // 4 workers: the work split must give the single thread's output bit for
  // bit (also under qemu, where the Arm kernels run here).
  lowbit::ThreadPool pool(4);
  int cases = 0;
  // Plus receptive fields around the NEON kernel's 16-bit limits
  // (core/bconv2d_neon.cc): the aarch64 assembly tile's 511 chunks of 128
  // bits (65000 channels just inside, 65400 and 200000 past it: random bits
  // then sum past 65535), and the folds of the 16-bit sums into 32-bit ones
  // past 2047 x 128 bits on aarch64, 4095 x 128 on armv7, once or several times.
  struct Case {
    int rows, channels, cout;
  };
  std::vector<Case> shapes;
  for (int rows = 1; rows <= 13; ++rows) {
    for (int channels : {1, 31, 32, 33, 100, 257}) {
      for (int cout : {1, 17, 33, 70, 129, 300}) shapes.push_back({rows, channels, cout});
    }
  }
  // The GEMV's word loop, unrolled U = 4, 2, 1 times at 1, 2, 3 rows (AVX-512),
  // over 5, 7, 32 and 63 words (63: two windows of the byte popcounts' 31 and
  // one word), and out_channels that end exactly on a group of blocks (64 and
  // 128: no channel tail, every group through the whole-vector output) or not.
  for (int rows = 1; rows <= 3; ++rows) {
    for (int channels : {130, 200, 1000, 2000}) {
      for (int cout : {64, 128, 300}) shapes.push_back({rows, channels, cout});
    }
  }
  for (int channels : {65000, 65400, 200000, 262017, 524161, 1100001}) {
    shapes.push_back({5, channels, 9});
  }
  for (const Case& shape : shapes) {
    const int rows = shape.rows, channels = shape.channels, cout = shape.cout;
    lowbit::BGemmParams p;
    p.rows = rows;
    p.channels_in = channels;
    p.out_channels = cout;
    p.activation = uniform(0, 1) ? lowbit::Activation::kRelu : lowbit::Activation::kNone;
    const std::int64_t words = p.words();
    std::vector<PackedWord> input(static_cast<std::size_t>(rows * words));
    for (PackedWord& w : input) w = static_cast<PackedWord>(rng());
    std::vector<PackedWord> filter(static_cast<std::size_t>(cout * words));
    for (PackedWord& w : filter) w = static_cast<PackedWord>(rng());
    const PackedWord tail = lowbit::TailMask(channels);
    for (std::size_t i = words - 1; i < filter.size(); i += words) filter[i] &= tail;
    std::vector<float> multiplier(cout), bias(cout);
    for (auto& m : multiplier) m = std::uniform_real_distribution<float>(-2, 2)(rng);
    for (auto& b : bias) b = std::uniform_real_distribution<float>(-3, 3)(rng);
    const std::size_t out_size = static_cast<std::size_t>(rows * cout);
    std::vector<float> expected(out_size), actual(out_size);
    const BConv2DParams conv = p.AsConv2D();
    lowbit::BConv2D(BConv2DKernel::kReference, conv, input.data(), filter.data(),
                    multiplier.data(), bias.data(), expected.data(), inline_executor);
    const std::int64_t out_words = lowbit::PackedWords(cout);
    std::vector<PackedWord> expected_bits(static_cast<std::size_t>(rows * out_words), 0);
    for (int r = 0; r < rows; ++r) {
      for (int c = 0; c < cout; ++c) {
        if (ExpectedBit(expected[r * cout + c])) {
          expected_bits[r * out_words + c / 32] |= 1u << (c % 32);
        }
      }
    }
    std::vector<std::int32_t> threshold(cout);
    std::vector<std::uint8_t> flip(cout);
    if (!lowbit::ComputeBGemmThresholds(p, multiplier.data(), bias.data(), threshold.data(),
                                        flip.data())
             .ok) {
      return -1;
    }
    for (BConv2DKernel k : kernels) {
      lowbit::BConv2DFilter prepared;
      prepared.Prepare(k, conv, filter.data());
      for (lowbit::ParallelExecutor* executor :
           {static_cast<lowbit::ParallelExecutor*>(&inline_executor),
            static_cast<lowbit::ParallelExecutor*>(&pool)}) {
        std::fill(actual.begin(), actual.end(), -12345.0f);
        lowbit::BGemm(p, input.data(), prepared, multiplier.data(), bias.data(),
                      actual.data(), *executor);
        std::vector<PackedWord> bits(expected_bits.size(), 0xdeadbeef);
        lowbit::BGemmBitpacked(p, input.data(), prepared, threshold.data(), flip.data(),
                               bits.data(), *executor);
        const bool float_ok =
            std::memcmp(actual.data(), expected.data(), out_size * sizeof(float)) == 0;
        if (!float_ok || bits != expected_bits) {
          std::printf("BGEMM MISMATCH (%s output) kernel %s rows %d channels_in %d "
                      "out_channels %d\n",
                      float_ok ? "bit-packed" : "float", lowbit::BConv2DKernelName(k), rows,
                      channels, cout);
          return -1;
        }
      }
    }
    ++cases;
  }
  return cases;
}

// Multipliers past the plain (-2, 2), every third channel: mode 1 subnormal,
// tiny and zero ones (2 m still exact: the SIMD kernels' doubled-multiplier
// output path, core/bconv2d_simd.h), mode 2 also huge ones (2 m overflows, so
// a zero dot product would give NaN instead of 0 there) and infinities, mode
// 3 NaN too (the kernels must fall back to the direct transform); mode 0
// none.
void SprinkleMultipliers(int mode, std::vector<float>* multiplier, std::mt19937& rng) {
  if (mode == 0) return;
  const float tiny[] = {1e-40f, -3e-39f, 1e-45f, -1.5e-38f, 0.0f, -0.0f};
  const float huge[] = {std::numeric_limits<float>::max(), -2.5e38f, 1.8e38f,
                        -std::numeric_limits<float>::max(),
                        std::numeric_limits<float>::infinity(),
                        -std::numeric_limits<float>::infinity()};
  std::uniform_int_distribution<int> pick(0, 5);
  for (std::size_t c = 0; c < multiplier->size(); c += 3) {
    (*multiplier)[c] = mode >= 2 && c % 2 == 0 ? huge[pick(rng)] : tiny[pick(rng)];
  }
  if (mode == 3) (*multiplier)[multiplier->size() / 2] = std::numeric_limits<float>::quiet_NaN();
}

// One convolution through every kernel, with 1 thread and 4, against the
// reference kernel, bit for bit; false (after printing the case) on a
// mismatch. The filter, input, multipliers (SprinkleMultipliers), bias and
// epilogue are random.
bool CheckConvCase(int c, BConv2DParams p, int multiplier_mode,
                   const std::vector<BConv2DKernel>& kernels, std::mt19937& rng,
                   lowbit::ParallelExecutor& inline_executor, lowbit::ParallelExecutor& pool) {
  auto uniform = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  const lowbit::Status status = lowbit::ComputeBConv2DGeometry(&p);
  if (!status.ok) {
    std::printf("case %d: %s\n", c, status.message.c_str());
    return false;
  }
  const std::int64_t words = p.words();
  // Random words, garbage in the padding bits included: kernels must mask them.
  std::vector<PackedWord> input(static_cast<std::size_t>(p.batch * p.in_h * p.in_w * words));
  for (PackedWord& w : input) w = static_cast<PackedWord>(rng());
  std::vector<PackedWord> filter(
      static_cast<std::size_t>(p.out_channels * p.kernel_h * p.kernel_w * words));
  for (PackedWord& w : filter) w = static_cast<PackedWord>(rng());
  const PackedWord tail = lowbit::TailMask(p.channels_in);
  for (std::size_t i = words - 1; i < filter.size(); i += words) filter[i] &= tail;
  std::vector<float> multiplier(p.out_channels), bias(p.out_channels);
  for (auto& m : multiplier) m = std::uniform_real_distribution<float>(-2, 2)(rng);
  SprinkleMultipliers(multiplier_mode, &multiplier, rng);
  for (auto& b : bias) b = std::uniform_real_distribution<float>(-3, 3)(rng);
  const std::size_t out_size =
      static_cast<std::size_t>(p.batch * p.out_h * p.out_w * p.out_channels);
  std::vector<float> expected(out_size), actual(out_size);
  // The fused epilogue (a BatchNormalization after the ReLU, a residual
  // Add) in one case out of two, each step on its own.
  std::vector<float> post_multiplier(p.out_channels), post_bias(p.out_channels),
      residual(out_size);
  for (auto& m : post_multiplier) m = std::uniform_real_distribution<float>(-2, 2)(rng);
  for (auto& b : post_bias) b = std::uniform_real_distribution<float>(-1, 1)(rng);
  for (auto& r : residual) r = std::uniform_real_distribution<float>(-4, 4)(rng);
  lowbit::BConv2DEpilogue epilogue;
  const int epilogue_kind = uniform(0, 3);
  if (epilogue_kind & 1) {
    epilogue.post_multiplier = post_multiplier.data();
    epilogue.post_bias = post_bias.data();
  }
  // The residual: floats, or (one case out of two) int8 codes whose real
  // values float(q - zero_point) * scale are the floats the reference adds.
  std::vector<std::int8_t> residual_codes(out_size);
  const bool residual_int8 = (epilogue_kind & 2) && uniform(0, 1);
  lowbit::BConv2DEpilogue kernel_epilogue = epilogue;
  if (residual_int8) {
    kernel_epilogue.residual_scale = std::uniform_real_distribution<float>(0.01f, 0.1f)(rng);
    kernel_epilogue.residual_zero_point = uniform(-128, 127);
    kernel_epilogue.residual_int8 = residual_codes.data();
    for (std::size_t i = 0; i < out_size; ++i) {
      residual_codes[i] = static_cast<std::int8_t>(uniform(-128, 127));
      residual[i] = static_cast<float>(residual_codes[i] - kernel_epilogue.residual_zero_point) *
                    kernel_epilogue.residual_scale;
    }
  } else if (epilogue_kind & 2) {
    kernel_epilogue.residual = residual.data();
  }
  if (epilogue_kind & 2) epilogue.residual = residual.data();
  lowbit::BConv2D(BConv2DKernel::kReference, p, input.data(), filter.data(), multiplier.data(),
                  bias.data(), expected.data(), inline_executor, epilogue);
  // The int8 output of the same y (core/int8_io.h): scales from where most
  // values saturate to where they spread over the codes, ReLU or not.
  lowbit::Int8Quantization quantization;
  quantization.scale = std::uniform_real_distribution<float>(0.02f, 8.0f)(rng);
  quantization.zero_point = uniform(-128, 127);
  quantization.relu = uniform(0, 1) == 1;
  std::vector<std::int8_t> expected_codes(out_size), codes(out_size);
  for (std::size_t i = 0; i < out_size; ++i) {
    expected_codes[i] = lowbit::QuantizeInt8(expected[i], quantization);
  }
  // The bit-packed output (finite multipliers only: modes 0 and 1): the signs
  // of the reference's y without the epilogue, which that output does not take.
  const bool bits_case = multiplier_mode <= 1;
  const std::int64_t out_words = lowbit::PackedWords(p.out_channels);
  const std::int64_t pixels = p.batch * p.out_h * p.out_w;
  std::vector<PackedWord> expected_bits(static_cast<std::size_t>(pixels * out_words), 0),
      bits(expected_bits.size());
  std::vector<std::int32_t> threshold(p.out_channels);
  std::vector<std::uint8_t> flip(p.out_channels);
  if (bits_case) {
    std::vector<float> y(out_size);
    lowbit::BConv2D(BConv2DKernel::kReference, p, input.data(), filter.data(), multiplier.data(),
                    bias.data(), y.data(), inline_executor);
    for (std::int64_t i = 0; i < pixels; ++i) {
      for (std::int64_t ch = 0; ch < p.out_channels; ++ch) {
        if (ExpectedBit(y[i * p.out_channels + ch])) {
          expected_bits[i * out_words + ch / 32] |= 1u << (ch % 32);
        }
      }
    }
    if (!lowbit::ComputeBConv2DThresholds(p, multiplier.data(), bias.data(), threshold.data(),
                                          flip.data())
             .ok) {
      std::printf("case %d: thresholds rejected\n", c);
      return false;
    }
  }
  for (BConv2DKernel k : kernels) {
    lowbit::BConv2DFilter prepared;
    prepared.PrepareFromPerTap(k, p, filter.data());
    std::vector<float> scratch(
        static_cast<std::size_t>(lowbit::BConv2DInt8ScratchSize(k, p)));
    for (lowbit::ParallelExecutor* executor : {&inline_executor, &pool}) {
      std::fill(actual.begin(), actual.end(), -12345.0f);
      lowbit::BConv2D(k, p, input.data(), filter.data(), multiplier.data(), bias.data(),
                      actual.data(), *executor, kernel_epilogue);
      std::fill(codes.begin(), codes.end(), std::int8_t{-77});
      lowbit::BConv2DInt8(p, input.data(), prepared, multiplier.data(), bias.data(),
                          kernel_epilogue, quantization, scratch.data(), codes.data(), *executor);
      if (bits_case) {
        std::fill(bits.begin(), bits.end(), 0xdeadbeefu);
        lowbit::BConv2DBitpacked(p, input.data(), prepared, threshold.data(), flip.data(),
                                 bits.data(), *executor);
      }
      const bool float_ok =
          std::memcmp(actual.data(), expected.data(), out_size * sizeof(float)) == 0;
      const bool int8_ok = codes == expected_codes;
      if (!float_ok || !int8_ok || bits != expected_bits) {
        std::printf(
            "MISMATCH (%s output%s) kernel %s case %d: n=%lld %lldx%lldx%lld -> %lld "
            "k=%lldx%lld s=%lld,%lld d=%lld,%lld %s(%lld,%lld,%lld,%lld) pad=%d epilogue=%d "
            "multipliers=%d\n",
            !float_ok ? "float" : !int8_ok ? "int8" : "bit-packed",
            residual_int8 ? ", int8 residual" : "",
            lowbit::BConv2DKernelName(k), c, (long long)p.batch, (long long)p.in_h,
            (long long)p.in_w, (long long)p.channels_in, (long long)p.out_channels,
            (long long)p.kernel_h, (long long)p.kernel_w, (long long)p.stride_h,
            (long long)p.stride_w, (long long)p.dilation_h, (long long)p.dilation_w,
            p.padding == lowbit::Padding::kValid  ? "VALID"
            : p.padding == lowbit::Padding::kSame ? "SAME"
                                                  : "EXPLICIT",
            (long long)p.explicit_pads.top, (long long)p.explicit_pads.bottom,
            (long long)p.explicit_pads.left, (long long)p.explicit_pads.right, p.pad_value,
            epilogue_kind, multiplier_mode);
        return false;
      }
    }
  }
  return true;
}

// The int8 output at the edges of its definition (core/int8_io.h) through
// every kernel: values at and next to halves (scale 0.5, so that y *
// inverse_scale is exact and lands on them), past the int8 range, infinities,
// NaN, subnormals and zeros, with zero points at both ends and ReLU or not.
// A 1x1 convolution with multiplier 0 makes y = bias; 40 channels (a whole
// block and a tail) and 25 pixels (whole tiles and a partial one), with 64
// input channels (an even K: the SIMD kernels' plain output path) and 33.
bool CheckInt8Edges(const std::vector<BConv2DKernel>& kernels, std::mt19937& rng) {
  const float inf = std::numeric_limits<float>::infinity();
  const float edges[] = {0.5f,   -0.5f,  1.5f,  -1.5f, 2.5f,  -2.5f, 0.49999997f, -0.49999997f,
                         126.5f, -127.5f, 127.49998f, -128.5f, 1e30f, -1e30f, inf, -inf,
                         std::numeric_limits<float>::quiet_NaN(), 1e-40f, -1e-40f, 0.0f};
  constexpr int kEdges = static_cast<int>(sizeof(edges) / sizeof(edges[0]));
  lowbit::InlineExecutor executor;
  for (int channels : {64, 33}) {
    BConv2DParams p;
    p.batch = 1;
    p.in_h = p.in_w = 5;
    p.channels_in = channels;
    p.out_channels = 40;
    p.kernel_h = p.kernel_w = 1;
    if (!lowbit::ComputeBConv2DGeometry(&p).ok) return false;
    const std::size_t out_size = 25 * 40;
    std::vector<PackedWord> input(static_cast<std::size_t>(25 * p.words()));
    for (PackedWord& w : input) w = static_cast<PackedWord>(rng());
    std::vector<PackedWord> filter(static_cast<std::size_t>(40 * p.words()));
    for (PackedWord& w : filter) w = static_cast<PackedWord>(rng());
    const PackedWord tail = lowbit::TailMask(channels);
    for (std::size_t i = p.words() - 1; i < filter.size(); i += p.words()) filter[i] &= tail;
    std::vector<float> multiplier(40, 0.0f), bias(40), expected(out_size);
    for (int c = 0; c < 40; ++c) bias[c] = edges[c % kEdges] * (c < kEdges ? 0.5f : -0.5f);
    lowbit::BConv2D(BConv2DKernel::kReference, p, input.data(), filter.data(), multiplier.data(),
                    bias.data(), expected.data(), executor);
    for (int zero_point : {-128, -7, 0, 127}) {
      for (bool relu : {false, true}) {
        lowbit::Int8Quantization q;
        q.scale = 0.5f;
        q.zero_point = zero_point;
        q.relu = relu;
        std::vector<std::int8_t> want(out_size), got(out_size);
        for (std::size_t i = 0; i < out_size; ++i) want[i] = lowbit::QuantizeInt8(expected[i], q);
        for (BConv2DKernel k : kernels) {
          lowbit::BConv2DFilter prepared;
          prepared.PrepareFromPerTap(k, p, filter.data());
          std::vector<float> scratch(static_cast<std::size_t>(lowbit::BConv2DInt8ScratchSize(k, p)));
          lowbit::BConv2DInt8(p, input.data(), prepared, multiplier.data(), bias.data(), {}, q,
                              scratch.data(), got.data(), executor);
          if (got != want) {
            std::printf("INT8 EDGE MISMATCH kernel %s channels_in %d zero_point %d relu %d\n",
                        lowbit::BConv2DKernelName(k), channels, zero_point, relu ? 1 : 0);
            return false;
          }
        }
      }
    }
  }
  return true;
}

// The bit-packed output at its thresholds' edges, through every kernel with 1
// thread and 4: per channel a threshold of -K (the constant bits), -K + 1, K,
// K + 1, a dot product of the layer (D < t false at equality) or one above it,
// or random, and a random flip; the expected bits straight from the
// reference's dot products. Output channels around the words and the SIMD
// blocks (16 on AVX2, 32 on AVX-512: tails, half words, several words),
// channels_in with tails, 1x1 and 3x3, stride 1 and 2, SAME with both pad
// values and VALID, sizes that end in partial tiles. Returns the number of
// cases, or -1.
int CheckBitpackedEdges(const std::vector<BConv2DKernel>& kernels, std::mt19937& rng) {
  auto uniform = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  lowbit::InlineExecutor inline_executor;
  lowbit::ThreadPool pool(4);
  int cases = 0;
  for (int channels : {1, 33, 64, 130}) {
    for (int cout : {1, 16, 31, 32, 33, 48, 64, 70, 100}) {
      for (int shape = 0; shape < 2; ++shape) {
        BConv2DParams p;
        p.batch = uniform(1, 2);
        p.channels_in = channels;
        p.out_channels = cout;
        p.kernel_h = p.kernel_w = shape == 0 ? 3 : uniform(1, 3);
        p.stride_h = p.stride_w = shape == 0 ? 1 : 2;
        p.padding = uniform(0, 2) ? lowbit::Padding::kSame : lowbit::Padding::kValid;
        p.pad_value = uniform(0, 1);
        p.in_h = uniform(3, 9);
        p.in_w = uniform(3, 14);
        if (!lowbit::ComputeBConv2DGeometry(&p).ok) return -1;
        const std::int64_t words = p.words();
        const std::int64_t k = p.kernel_h * p.kernel_w * channels;
        std::vector<PackedWord> input(static_cast<std::size_t>(p.batch * p.in_h * p.in_w * words));
        for (PackedWord& w : input) w = static_cast<PackedWord>(rng());
        std::vector<PackedWord> filter(static_cast<std::size_t>(cout * p.kernel_h * p.kernel_w * words));
        for (PackedWord& w : filter) w = static_cast<PackedWord>(rng());
        const PackedWord tail = lowbit::TailMask(channels);
        for (std::size_t i = words - 1; i < filter.size(); i += words) filter[i] &= tail;
        // The dot products D, exact in float (multiplier 1, bias 0).
        const std::int64_t pixels = p.batch * p.out_h * p.out_w;
        std::vector<float> ones(cout, 1.0f), zeros(cout, 0.0f), dots(pixels * cout);
        lowbit::BConv2D(BConv2DKernel::kReference, p, input.data(), filter.data(), ones.data(),
                        zeros.data(), dots.data(), inline_executor);
        std::vector<std::int32_t> threshold(cout);
        std::vector<std::uint8_t> flip(cout);
        for (int c = 0; c < cout; ++c) {
          const auto d = static_cast<std::int32_t>(dots[uniform(0, pixels - 1) * cout + c]);
          const std::int32_t choices[] = {static_cast<std::int32_t>(-k),
                                          static_cast<std::int32_t>(-k + 1),
                                          static_cast<std::int32_t>(k),
                                          static_cast<std::int32_t>(k + 1), d, d + 1,
                                          uniform(static_cast<int>(-k), static_cast<int>(k + 1))};
          threshold[c] = choices[uniform(0, 6)];
          flip[c] = static_cast<std::uint8_t>(uniform(0, 1));
        }
        const std::int64_t out_words = lowbit::PackedWords(cout);
        std::vector<PackedWord> expected(static_cast<std::size_t>(pixels * out_words), 0);
        for (std::int64_t i = 0; i < pixels; ++i) {
          for (int c = 0; c < cout; ++c) {
            const bool bit = (static_cast<std::int32_t>(dots[i * cout + c]) < threshold[c]) != (flip[c] != 0);
            if (bit) expected[i * out_words + c / 32] |= 1u << (c % 32);
          }
        }
        std::vector<PackedWord> bits(expected.size());
        for (BConv2DKernel kernel : kernels) {
          lowbit::BConv2DFilter prepared;
          prepared.PrepareFromPerTap(kernel, p, filter.data());
          for (lowbit::ParallelExecutor* executor :
               {static_cast<lowbit::ParallelExecutor*>(&inline_executor),
                static_cast<lowbit::ParallelExecutor*>(&pool)}) {
            std::fill(bits.begin(), bits.end(), 0xdeadbeefu);
            lowbit::BConv2DBitpacked(p, input.data(), prepared, threshold.data(), flip.data(),
                                     bits.data(), *executor);
            if (bits != expected) {
              std::printf("BIT-PACKED EDGE MISMATCH kernel %s channels_in %d out_channels %d "
                          "%lldx%lld k=%lld s=%lld %s pad_value %d\n",
                          lowbit::BConv2DKernelName(kernel), channels, cout,
                          (long long)p.in_h, (long long)p.in_w, (long long)p.kernel_h,
                          (long long)p.stride_h,
                          p.padding == lowbit::Padding::kSame ? "SAME" : "VALID", p.pad_value);
              return -1;
            }
          }
        }
        ++cases;
      }
    }
  }
  return cases;
}

}  // namespace

int main(int argc, char** argv) {
  const int cases = argc > 1 ? std::atoi(argv[1]) : 200;
  const std::vector<BConv2DKernel> kernels = RunnableKernels();
  std::printf("kernels:");
  for (BConv2DKernel k : kernels) std::printf(" %s", lowbit::BConv2DKernelName(k));
  std::printf("\n");
  std::mt19937 rng(12345);
  if (!CheckBitpack(kernels, rng)) return 1;
  if (!CheckBitpackInt8(rng)) return 1;
  std::printf("INT8 BITPACK OK\n");
  const int gemm_cases = CheckBGemm(kernels, rng);
  if (gemm_cases < 0) return 1;
  std::printf("BGEMM OK %d cases\n", gemm_cases);
  if (!CheckInt8Edges(kernels, rng)) return 1;
  std::printf("INT8 EDGES OK\n");
  const int bit_edge_cases = CheckBitpackedEdges(kernels, rng);
  if (bit_edge_cases < 0) return 1;
  std::printf("BIT-PACKED EDGES OK %d cases\n", bit_edge_cases);
  auto uniform = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  const int channel_choices[] = {1, 7, 31, 32, 33, 64, 65, 100, 130, 256};
  lowbit::InlineExecutor inline_executor;
  // 4 workers: the work split must give the single thread's output bit for
  // bit (also under qemu, where the Arm kernels run here).
  lowbit::ThreadPool pool(4);
  for (int c = 0; c < cases; ++c) {
    BConv2DParams p;
    p.batch = uniform(1, 2);
    p.channels_in = channel_choices[uniform(0, 9)];
    p.out_channels = uniform(1, 40);
    p.kernel_h = uniform(1, 3);
    p.kernel_w = uniform(1, 3);
    p.stride_h = uniform(1, 2);
    p.stride_w = uniform(1, 2);
    p.dilation_h = uniform(1, 2);
    p.dilation_w = uniform(1, 2);
    const int padding_kind = uniform(0, 2);
    p.padding = padding_kind == 0   ? lowbit::Padding::kValid
                : padding_kind == 1 ? lowbit::Padding::kSame
                                    : lowbit::Padding::kExplicit;
    p.pad_value = uniform(0, 1);
    p.activation = uniform(0, 1) ? lowbit::Activation::kRelu : lowbit::Activation::kNone;
    const int eff_h = (p.kernel_h - 1) * p.dilation_h + 1;
    const int eff_w = (p.kernel_w - 1) * p.dilation_w + 1;
    if (p.padding == lowbit::Padding::kExplicit) {
      // Up to 4 rows / columns a side: more than a window at times, so whole
      // windows lie in the padding (the transposed convolution's phases).
      p.explicit_pads.top = uniform(0, 4);
      p.explicit_pads.bottom = uniform(0, 4);
      p.explicit_pads.left = uniform(0, 4);
      p.explicit_pads.right = uniform(0, 4);
      p.in_h = uniform(1, 12);
      p.in_w = uniform(1, 20);
      const auto& pads = p.explicit_pads;
      if (p.in_h + pads.top + pads.bottom < eff_h) p.in_h = eff_h;
      if (p.in_w + pads.left + pads.right < eff_w) p.in_w = eff_w;
    } else {
      p.in_h = uniform(eff_h, 12);
      p.in_w = uniform(eff_w, 20);
    }
    if (!CheckConvCase(c, p, 0, kernels, rng, inline_executor, pool)) return 1;
  }
  // Whole register tiles of whole channel blocks (32 channels on AVX-512,
  // 16 on AVX2), where the SIMD kernels take their plain output path with the
  // doubled multiplier, next to its fallbacks: odd K (33 channels, 1x1 or
  // 3x3), special multipliers, ReLU or not, borders with pad_value 1.
  int plain_cases = 0;
  for (int mode = 0; mode < 4; ++mode) {
    for (int kernel_size : {1, 3}) {
      for (int channels : {64, 128, 33}) {
        for (int cout : {32, 64, 70}) {
          BConv2DParams p;
          p.batch = 1;
          p.channels_in = channels;
          p.out_channels = cout;
          p.kernel_h = p.kernel_w = kernel_size;
          p.padding = uniform(0, 1) ? lowbit::Padding::kSame : lowbit::Padding::kValid;
          p.pad_value = uniform(0, 1);
          p.activation = uniform(0, 1) ? lowbit::Activation::kRelu : lowbit::Activation::kNone;
          p.in_h = uniform(6, 9);
          p.in_w = uniform(10, 14);
          if (!CheckConvCase(cases + plain_cases, p, mode, kernels, rng, inline_executor, pool)) {
            return 1;
          }
          ++plain_cases;
        }
      }
    }
  }
  std::printf("whole-tile OK %d cases\n", plain_cases);
  std::printf("OK %d cases\n", cases);
  return 0;
}
