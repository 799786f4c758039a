// Bit-exactness check of the binary depthwise convolution (core/bdepthwise.h)
// on every read-out path this CPU runs (x86: portable, AVX2; Arm: portable, NEON),
// against a naive loop over +-1 values written here: random shapes with
// channel tails, depth multipliers (table and run expansions), kernels of 1 to
// 81 taps (every counter width, several blocks), strides, dilations, both
// paddings and pad values, garbage in padding bits, 1 and 2 threads, float
// and bit-packed outputs, packed and float inputs (the float input binarised
// inside the AVX-512 kernel for depth multiplier 1 and whole words of
// channels, else packed first; its values include -0.0, NaN of both signs,
// infinities and subnormals, which binarise to +1 except -inf), each through
// the entry points that build the layer's plan on the fly and through one
// BDepthwisePlan kept for two different inputs (built from buffers that are
// overwritten before it runs), also by two threads at once. A plain
// executable so that it also runs under qemu-user for the Arm builds
// (tests/test_bdepthwise.py):
//     bdepthwise_check [cases]     exit status 0 and "OK <n> cases" on success
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <thread>
#include <vector>

#include "custom_ops/core/bconv2d.h"
#include "custom_ops/core/bdepthwise.h"
#include "custom_ops/core/kernel_table.h"
#include "custom_ops/core/thread_pool.h"

namespace {

using lowbit::BDepthwiseConv2DParams;
using lowbit::PackedWord;

int SignAt(const PackedWord* row, std::int64_t c) {
  return ((row[c / 32] >> (c % 32)) & 1u) ? -1 : 1;
}

// D for every output value, from the definition (docs/custom_ops.md).
std::vector<std::int32_t> NaiveDots(const BDepthwiseConv2DParams& p, const PackedWord* input,
                                    const PackedWord* filter) {
  std::vector<std::int32_t> dots;
  const std::int64_t in_words = p.in_words(), out_words = p.out_words();
  for (std::int64_t n = 0; n < p.batch; ++n) {
    for (std::int64_t oy = 0; oy < p.out_h; ++oy) {
      for (std::int64_t ox = 0; ox < p.out_w; ++ox) {
        for (std::int64_t o = 0; o < p.out_channels(); ++o) {
          std::int32_t dot = 0;
          for (std::int64_t ky = 0; ky < p.kernel_h; ++ky) {
            for (std::int64_t kx = 0; kx < p.kernel_w; ++kx) {
              const std::int64_t iy = oy * p.stride_h - p.pad_top + ky * p.dilation_h;
              const std::int64_t ix = ox * p.stride_w - p.pad_left + kx * p.dilation_w;
              const bool inside = iy >= 0 && iy < p.in_h && ix >= 0 && ix < p.in_w;
              const int x = inside ? SignAt(input + ((n * p.in_h + iy) * p.in_w + ix) * in_words,
                                            o / p.depth_multiplier)
                                   : p.pad_value;
              dot += x * SignAt(filter + (ky * p.kernel_w + kx) * out_words, o);
            }
          }
          dots.push_back(dot);
        }
      }
    }
  }
  return dots;
}

// The float path's sign bit (negative normal or -inf) of y.
bool NegativeBit(float y) {
  return (std::fpclassify(y) == FP_NORMAL || std::isinf(y)) && std::signbit(y);
}

// A float input whose binarisation is `input` (channels_in values per pixel,
// padding bits ignored): for a set bit a negative normal or -inf, else one of
// the values that binarise to +1 (NegativeBit false), each drawn at random.
std::vector<float> FloatInput(const BDepthwiseConv2DParams& p, const std::vector<PackedWord>& input,
                              std::mt19937& rng) {
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float negative[] = {-1.5f, -inf, -1e-30f, -3e38f};
  const float positive[] = {0.0f, -0.0f, 2.0f, nan, -nan, inf, -1e-40f, 1e-40f};
  const std::int64_t pixels = p.batch * p.in_h * p.in_w;
  std::vector<float> floats(static_cast<std::size_t>(pixels * p.channels_in));
  for (std::int64_t i = 0; i < pixels; ++i) {
    for (std::int64_t c = 0; c < p.channels_in; ++c) {
      const bool set = SignAt(input.data() + i * p.in_words(), c) < 0;
      floats[static_cast<std::size_t>(i * p.channels_in + c)] =
          set ? negative[rng() % 4] : positive[rng() % 8];
    }
  }
  return floats;
}

int Mismatch(const char* what, const char* path, int c, const BDepthwiseConv2DParams& p) {
  std::printf(
      "MISMATCH (%s) path %s case %d: n=%lld %lldx%lldx%lld dm=%lld k=%lldx%lld "
      "s=%lld,%lld d=%lld,%lld %s pad=%d\n",
      what, path, c, (long long)p.batch, (long long)p.in_h, (long long)p.in_w,
      (long long)p.channels_in, (long long)p.depth_multiplier, (long long)p.kernel_h,
      (long long)p.kernel_w, (long long)p.stride_h, (long long)p.stride_w,
      (long long)p.dilation_h, (long long)p.dilation_w,
      p.padding == lowbit::Padding::kSame ? "SAME" : "VALID", p.pad_value);
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  const int cases = argc > 1 ? std::atoi(argv[1]) : 200;
  // The paths that differ here: one per depthwise entry point of the kernel
  // table among the rows this CPU runs, the least demanding row for each
  // (the table is best first, so walk it backwards), the reference aside.
  std::vector<const char*> paths;
  std::vector<lowbit::DepthwiseRowsFn> seen;
  const lowbit::KernelPathList table = lowbit::KernelPaths();
  for (const lowbit::KernelPath* row = table.end(); row != table.begin();) {
    --row;
    if (row->id == lowbit::BConv2DKernel::kReference || !lowbit::CanRun(*row)) continue;
    if (std::find(seen.begin(), seen.end(), row->bdepthwise_rows) != seen.end()) continue;
    seen.push_back(row->bdepthwise_rows);
    paths.push_back(row->name);
  }
  std::printf("paths:");
  for (const char* path : paths) std::printf(" %s", path);
  std::printf("\n");

  std::mt19937 rng(2024);
  auto uniform = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  const int channel_choices[] = {1, 5, 31, 32, 33, 64, 70, 100, 96, 256};
  const int multiplier_choices[] = {1, 1, 2, 3, 8, 9, 40};
  const int kernel_choices[] = {1, 2, 3, 3, 5, 7, 9};
  lowbit::InlineExecutor inline_executor;
  lowbit::ThreadPool pool(2);
  for (int c = 0; c < cases; ++c) {
    BDepthwiseConv2DParams p;
    p.batch = uniform(1, 2);
    p.channels_in = channel_choices[uniform(0, 9)];
    p.depth_multiplier = multiplier_choices[uniform(0, 6)];
    if (p.channels_in * p.depth_multiplier > 300) p.channels_in = uniform(1, 7);
    p.kernel_h = kernel_choices[uniform(0, 6)];
    p.kernel_w = kernel_choices[uniform(0, 6)];
    p.stride_h = uniform(1, 2);
    p.stride_w = uniform(1, 2);
    p.dilation_h = uniform(1, 2);
    p.dilation_w = uniform(1, 2);
    if (c % 3 == 0) {
      // The layers whose float input the AVX-512 kernel binarises straight
      // into its stride phases (depth multiplier 1, whole words of channels:
      // 64 channels unrolled, other word counts looped), stride 3 too (three
      // phases; a phase's first and last pixels fall on the padding or not).
      p.depth_multiplier = 1;
      p.channels_in = 32 * uniform(1, 9);
      p.stride_w = uniform(1, 3);
    }
    p.padding = uniform(0, 2) ? lowbit::Padding::kSame : lowbit::Padding::kValid;
    p.pad_value = uniform(0, 1);
    p.activation = uniform(0, 3) ? lowbit::Activation::kNone : lowbit::Activation::kRelu;
    const int min_h = p.padding == lowbit::Padding::kSame ? 1 : (p.kernel_h - 1) * p.dilation_h + 1;
    const int min_w = p.padding == lowbit::Padding::kSame ? 1 : (p.kernel_w - 1) * p.dilation_w + 1;
    p.in_h = uniform(min_h, min_h + 6);
    p.in_w = uniform(min_w, min_w + 9);
    const lowbit::Status status = lowbit::ComputeBDepthwiseConv2DGeometry(&p);
    if (!status.ok) {
      std::printf("case %d: %s\n", c, status.message.c_str());
      return 1;
    }
    // Random words, garbage in the padding bits included: kernels ignore them.
    std::vector<PackedWord> input(
        static_cast<std::size_t>(p.batch * p.in_h * p.in_w * p.in_words()));
    for (PackedWord& w : input) w = static_cast<PackedWord>(rng());
    std::vector<PackedWord> filter(static_cast<std::size_t>(lowbit::DepthwiseFilterWords(p)));
    for (PackedWord& w : filter) w = static_cast<PackedWord>(rng());
    const std::int64_t cout = p.out_channels();
    std::vector<float> multiplier(cout), bias(cout);
    for (auto& m : multiplier) m = std::uniform_real_distribution<float>(-2, 2)(rng);
    for (auto& b : bias) b = std::uniform_real_distribution<float>(-3, 3)(rng);
    std::vector<std::int32_t> threshold(cout);
    std::vector<std::uint8_t> flip(cout);
    if (!lowbit::ComputeBDepthwiseThresholds(p, multiplier.data(), bias.data(), threshold.data(),
                                             flip.data()).ok) {
      return 1;
    }
    // Two inputs: a plan serves every call of its layer, so the second call
    // must not see anything of the first.
    std::vector<PackedWord> input2(input.size());
    for (PackedWord& w : input2) w = static_cast<PackedWord>(rng());
    const std::vector<PackedWord>* inputs[2] = {&input, &input2};
    const std::int64_t pixels = p.batch * p.out_h * p.out_w;
    std::vector<float> expected[2];
    std::vector<PackedWord> expected_bits[2];
    std::vector<float> floats[2];
    for (int i = 0; i < 2; ++i) {
      const std::vector<std::int32_t> dots = NaiveDots(p, inputs[i]->data(), filter.data());
      expected[i].resize(dots.size());
      expected_bits[i].assign(static_cast<std::size_t>(pixels * p.out_words()), 0);
      for (std::size_t j = 0; j < dots.size(); ++j) {
        const std::int64_t o = static_cast<std::int64_t>(j) % cout;
        float y = static_cast<float>(dots[j]) * multiplier[o] + bias[o];
        if (p.activation == lowbit::Activation::kRelu && y < 0.0f) y = 0.0f;
        expected[i][j] = y;
        if (NegativeBit(y)) {
          expected_bits[i][(j / cout) * p.out_words() + o / 32] |= PackedWord{1} << (o % 32);
        }
      }
      floats[i] = FloatInput(p, *inputs[i], rng);
    }
    std::vector<float> actual(expected[0].size());
    std::vector<PackedWord> actual_bits(expected_bits[0].size());
    std::vector<PackedWord> scratch(input.size());
    const char* what = nullptr;  // the first result that differs
    // Runs `call`, which writes `actual` (float output) or `actual_bits`,
    // from garbage, and compares it with input i's expected output.
    auto check = [&](const char* label, int i, bool bits, auto call) {
      std::fill(actual.begin(), actual.end(), -12345.0f);
      std::fill(actual_bits.begin(), actual_bits.end(), 0xdeadbeefu);
      call();
      const bool ok = bits ? actual_bits == expected_bits[i]
                           : std::memcmp(actual.data(), expected[i].data(),
                                         actual.size() * sizeof(float)) == 0;
      if (!ok && what == nullptr) what = label;
    };
    for (const char* path : paths) {
      setenv("LOWBIT_KERNEL", path, 1);
      const lowbit::BConv2DKernel kernel = lowbit::SelectBConv2DKernel();
      // A plan built from copies that are then overwritten: it must hold its
      // own filter and thresholds.
      lowbit::BDepthwisePlan plan;
      {
        std::vector<PackedWord> filter_copy = filter;
        std::vector<std::int32_t> threshold_copy = threshold;
        std::vector<std::uint8_t> flip_copy = flip;
        plan.Prepare(kernel, p, filter_copy.data(), threshold_copy.data(), flip_copy.data());
        std::fill(filter_copy.begin(), filter_copy.end(), ~filter_copy[0]);
        std::fill(threshold_copy.begin(), threshold_copy.end(), 0);
        std::fill(flip_copy.begin(), flip_copy.end(), 1);
      }
      if (!plan.Matches(kernel, p, true) || !plan.SameFilter(filter.data())) {
        what = "plan does not match its own layer";
      }
      for (lowbit::ParallelExecutor* executor :
           {static_cast<lowbit::ParallelExecutor*>(&inline_executor),
            static_cast<lowbit::ParallelExecutor*>(&pool)}) {
        // The plan built on the fly, packed input.
        check("float, packed input, no plan", 0, false, [&] {
          lowbit::BDepthwiseConv2D(p, input.data(), filter.data(), multiplier.data(),
                                   bias.data(), actual.data(), *executor);
        });
        check("bitpacked, packed input, no plan", 0, true, [&] {
          lowbit::BDepthwiseConv2DBitpacked(p, input.data(), filter.data(), threshold.data(),
                                            flip.data(), actual_bits.data(), *executor);
        });
        check("float, float input, no plan", 0, false, [&] {
          lowbit::BDepthwiseConv2DFloatInput(kernel, p, floats[0].data(), scratch.data(),
                                             filter.data(), multiplier.data(), bias.data(),
                                             actual.data(), *executor);
        });
        check("bitpacked, float input, no plan", 0, true, [&] {
          lowbit::BDepthwiseConv2DBitpackedFloatInput(kernel, p, floats[0].data(),
                                                      scratch.data(), filter.data(),
                                                      threshold.data(), flip.data(),
                                                      actual_bits.data(), *executor);
        });
        // The kept plan, both inputs, every entry point.
        for (int i = 0; i < 2; ++i) {
          check("float, packed input, plan", i, false, [&] {
            lowbit::BDepthwiseConv2D(plan, inputs[i]->data(), multiplier.data(), bias.data(),
                                     actual.data(), *executor);
          });
          check("bitpacked, packed input, plan", i, true, [&] {
            lowbit::BDepthwiseConv2DBitpacked(plan, inputs[i]->data(), actual_bits.data(),
                                              *executor);
          });
          check("float, float input, plan", i, false, [&] {
            lowbit::BDepthwiseConv2DFloatInput(plan, floats[i].data(), scratch.data(),
                                               multiplier.data(), bias.data(), actual.data(),
                                               *executor);
          });
          check("bitpacked, float input, plan", i, true, [&] {
            lowbit::BDepthwiseConv2DBitpackedFloatInput(plan, floats[i].data(), scratch.data(),
                                                        actual_bits.data(), *executor);
          });
        }
        if (what != nullptr) return Mismatch(what, path, c, p);
      }
      // One plan used by two threads at once (the TF kernel shares its plan
      // between concurrent calls): it is only read, so each thread gets its
      // own input's result. Every 8th case: threads cost more than a case.
      if (c % 8 == 0) {
        bool thread_ok[2] = {true, true};
        std::thread threads[2];
        for (int i = 0; i < 2; ++i) {
          threads[i] = std::thread([&, i] {
            lowbit::InlineExecutor executor;
            std::vector<float> out(expected[i].size());
            std::vector<PackedWord> bits(expected_bits[i].size());
            std::vector<PackedWord> own_scratch(input.size());
            for (int rep = 0; rep < 8; ++rep) {
              lowbit::BDepthwiseConv2D(plan, inputs[i]->data(), multiplier.data(), bias.data(),
                                       out.data(), executor);
              lowbit::BDepthwiseConv2DBitpackedFloatInput(plan, floats[i].data(),
                                                          own_scratch.data(), bits.data(),
                                                          executor);
              thread_ok[i] = thread_ok[i] && bits == expected_bits[i] &&
                             std::memcmp(out.data(), expected[i].data(),
                                         out.size() * sizeof(float)) == 0;
            }
          });
        }
        for (std::thread& t : threads) t.join();
        if (!thread_ok[0] || !thread_ok[1]) return Mismatch("one plan, two threads", path, c, p);
      }
    }
    unsetenv("LOWBIT_KERNEL");
  }
  std::printf("OK %d cases\n", cases);
  return 0;
}
