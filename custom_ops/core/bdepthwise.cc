#include "custom_ops/core/bdepthwise.h"

#include <algorithm>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "custom_ops/core/bconv2d_bitpacked.h"
#include "custom_ops/core/bdepthwise_kernels.h"
#include "custom_ops/core/bdepthwise_rows.h"
#include "custom_ops/core/bitpack.h"

namespace lowbit {
namespace {

constexpr std::int64_t kMaxDim = std::int64_t{1} << 30;
// Bound on the element count of every tensor the op reads, writes or makes
// (input, channel-expanded input, output): products of a few such sizes and
// byte counts stay far from int64 overflow.
constexpr std::int64_t kMaxElements = std::int64_t{1} << 56;

std::string Str(std::int64_t v) { return std::to_string(v); }

// Product of non-negative factors, or -1 once it exceeds kMaxElements.
std::int64_t BoundedProduct(std::initializer_list<std::int64_t> factors) {
  std::int64_t product = 1;
  for (const std::int64_t f : factors) {
    if (f != 0 && product > kMaxElements / f) return -1;
    product *= f;
  }
  return product;
}

// kSpread.v[b]: bit j of the byte b moved to byte j of a word (value 0 or 1),
// so that sum_p (kSpread.v[byte k of plane p] << p) holds in byte j the count
// of lane 8k + j (counts <= 63 < 256: bytes never carry).
struct SpreadTable {
  Lanes v[256];
  constexpr SpreadTable() : v() {
    for (int b = 0; b < 256; ++b) {
      for (int j = 0; j < 8; ++j) v[b] |= static_cast<Lanes>((b >> j) & 1) << (8 * j);
    }
  }
};
constexpr SpreadTable kSpread;

// Portable read-out of the bit-sliced counts (core/bdepthwise_rows.h).
struct TableCounter {
  // counts[o] (+)= the count the planes hold for lane o: the 8 counts of each
  // 8 lanes as the bytes of one word (P look-ups), stored little-endian (byte
  // j = lane 8k + j), then one vectorizable widening add.
  template <int P, bool kAccumulate>
  static void Add(const Lanes* planes, std::int32_t* counts) {
    std::uint8_t bytes[kLanes];
    for (int k = 0; k < kLanes / 8; ++k) {
      Lanes sum = 0;
      for (int p = 0; p < P; ++p) sum += kSpread.v[(planes[p] >> (8 * k)) & 0xffu] << p;
      std::memcpy(bytes + 8 * k, &sum, sizeof(sum));
    }
    for (int c = 0; c < kLanes; ++c) counts[c] = (kAccumulate ? counts[c] : 0) + bytes[c];
  }
};

// With depth_multiplier DM > 1, output channel o reads input channel o / DM.
// The input is expanded once (one pass over it) so that bit o of a pixel's
// words holds that channel: input bit c becomes the run of bits
// [c * DM, (c + 1) * DM). Padding bits of the input are ignored.

// ORs the (up to 64) bits of `bits` into `words` from bit `start` on.
void OrBits(PackedWord* words, std::int64_t count, std::int64_t start, Lanes bits) {
  const std::int64_t w = start / kBitsPerWord;
  const int offset = static_cast<int>(start % kBitsPerWord);
  const Lanes low = bits << offset;                           // bits [0, 64) of the result
  const Lanes high = offset == 0 ? 0 : bits >> (64 - offset);  // bits [64, 96)
  const PackedWord parts[3] = {static_cast<PackedWord>(low), static_cast<PackedWord>(low >> 32),
                               static_cast<PackedWord>(high)};
  for (int i = 0; i < 3 && w + i < count; ++i) words[w + i] |= parts[i];
}

void ExpandChannels(const BDepthwiseConv2DParams& p, const PackedWord* input, PackedWord* out,
                    ParallelExecutor& executor) {
  const std::int64_t in_words = p.in_words(), out_words = p.out_words();
  const std::int64_t dm = p.depth_multiplier;
  const PackedWord tail = TailMask(p.channels_in);
  // DM <= 8: the 8 * DM expanded bits of every input byte from a table.
  std::vector<Lanes> table(dm <= 8 ? 256 : 0, 0);
  for (std::size_t byte = 0; byte < table.size(); ++byte) {
    for (std::int64_t j = 0; j < 8; ++j) {
      if ((byte >> j) & 1u) table[byte] |= ((Lanes{1} << dm) - 1) << (j * dm);
    }
  }
  const std::int64_t bytes = (p.channels_in + 7) / 8;
  executor.ParallelFor(p.batch * p.in_h * p.in_w, out_words + p.channels_in,
                       [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t pix = begin; pix < end; ++pix) {
      const PackedWord* src = input + pix * in_words;
      PackedWord* dst = out + pix * out_words;
      std::fill(dst, dst + out_words, PackedWord{0});
      if (!table.empty()) {
        for (std::int64_t k = 0; k < bytes; ++k) {
          PackedWord word = src[k / 4];
          if (k / 4 == in_words - 1) word &= tail;
          const Lanes expanded = table[(word >> (8 * (k % 4))) & 0xffu];
          if (expanded != 0) OrBits(dst, out_words, k * 8 * dm, expanded);
        }
        continue;
      }
      for (std::int64_t w = 0; w < in_words; ++w) {  // DM > 8: a run per set bit
        PackedWord bits = w == in_words - 1 ? src[w] & tail : src[w];
        while (bits != 0) {
          const int b = __builtin_ctz(bits);
          bits &= bits - 1u;
          for (std::int64_t start = (w * kBitsPerWord + b) * dm, left = dm; left > 0;) {
            const std::int64_t n = std::min<std::int64_t>(left, 64);
            OrBits(dst, out_words, start, n == 64 ? ~Lanes{0} : (Lanes{1} << n) - 1);
            start += n;
            left -= n;
          }
        }
      }
    }
  });
}

// The bit-packed output's flips as bits, channel o in bit o % 64 of word o / 64.
std::vector<Lanes> FlipBits(const std::uint8_t* flip, std::int64_t out_channels) {
  const std::int64_t chunks = (out_channels + kLanes - 1) / kLanes;
  std::vector<Lanes> flip_bits(static_cast<std::size_t>(chunks), 0);
  for (std::int64_t chunk = 0; chunk < chunks; ++chunk) {
    // In a register: an OR into memory per channel is a store-to-load chain.
    Lanes bits = 0;
    const std::int64_t o0 = chunk * kLanes;
    const std::int64_t n = std::min<std::int64_t>(kLanes, out_channels - o0);
    std::int64_t c = 0;
    for (; c + 8 <= n; c += 8) {
      // The low bits of 8 flip bytes gathered into one byte: bit 8i (byte
      // i's bit 0) times the constant's terms 2^(56 - 7j) lands on bit
      // 56 + 8(i - j) + j, inside bits [56, 64) only for i = j (bit 56 + i);
      // all 64 products are distinct powers of two, so nothing carries.
      // (Byte i at bit 8i: little-endian, as every target of this library.)
      std::uint64_t eight;
      std::memcpy(&eight, flip + o0 + c, sizeof(eight));
      eight &= 0x0101010101010101u;
      bits |= static_cast<Lanes>((eight * 0x0102040810204080u) >> 56) << c;
    }
    for (; c < n; ++c) bits |= static_cast<Lanes>(flip[o0 + c] & 1u) << c;
    flip_bits[static_cast<std::size_t>(chunk)] = bits;
  }
  return flip_bits;
}

bool SameParams(const BDepthwiseConv2DParams& a, const BDepthwiseConv2DParams& b) {
  auto fields = [](const BDepthwiseConv2DParams& p) {
    return std::make_tuple(p.batch, p.in_h, p.in_w, p.channels_in, p.depth_multiplier,
                           p.kernel_h, p.kernel_w, p.stride_h, p.stride_w, p.dilation_h,
                           p.dilation_w, p.padding, p.pad_value, p.activation, p.out_h, p.out_w,
                           p.pad_top, p.pad_left);
  };
  return fields(a) == fields(b);
}

// 64-byte lines of the AVX-512 kernel's plan (new[] of an over-aligned type
// aligns them; value-initialised, so zeroed).
struct alignas(64) PlanLine {
  unsigned char bytes[64];
};

}  // namespace

struct BDepthwisePlan::Impl {
  BConv2DKernel kernel = BConv2DKernel::kPortable;
  BDepthwiseConv2DParams params;
  DepthwiseRowsFn rows = nullptr;
  // The float input is binarised inside the kernel (see BDepthwiseConv2DFloatInput).
  bool binarises_float_input = false;
  std::vector<PackedWord> filter;  // the words given to Prepare
  std::vector<PackedWord> zero_pixel;
  std::vector<std::int64_t> window_offsets;
  std::vector<const PackedWord*> filter_taps;
  std::vector<std::int32_t> threshold;  // padded to whole chunks; empty: float output only
  std::vector<Lanes> flip_bits;
  std::unique_ptr<PlanLine[]> avx512_storage;
  // The layer's fields of the kernels' arguments, pointing into this.
  DepthwiseRowsArgs args;
};

BDepthwisePlan::BDepthwisePlan() = default;
BDepthwisePlan::~BDepthwisePlan() = default;
BDepthwisePlan::BDepthwisePlan(BDepthwisePlan&&) noexcept = default;
BDepthwisePlan& BDepthwisePlan::operator=(BDepthwisePlan&&) noexcept = default;

void BDepthwisePlan::Prepare(BConv2DKernel kernel, const BDepthwiseConv2DParams& params,
                             const PackedWord* filter, const std::int32_t* threshold,
                             const std::uint8_t* flip) {
  auto plan = std::make_unique<Impl>();
  plan->kernel = kernel;
  plan->params = params;
  const BDepthwiseConv2DParams& p = plan->params;
  const std::int64_t words = p.out_words();
  plan->filter.assign(filter, filter + DepthwiseFilterWords(p));
  plan->zero_pixel.assign(static_cast<std::size_t>(words), 0);
  // Offsets are only used (and, so, only computed) when a whole window fits
  // in the input; they are then within the input.
  const bool window_fits = (p.kernel_h - 1) * p.dilation_h < p.in_h &&
                           (p.kernel_w - 1) * p.dilation_w < p.in_w;
  for (std::int64_t ky = 0; ky < p.kernel_h; ++ky) {
    for (std::int64_t kx = 0; kx < p.kernel_w; ++kx) {
      plan->window_offsets.push_back(
          window_fits ? (ky * p.dilation_h * p.in_w + kx * p.dilation_w) * words : 0);
      plan->filter_taps.push_back(plan->filter.data() + (ky * p.kernel_w + kx) * words);
    }
  }
  DepthwiseRowsArgs& args = plan->args;
  args.params = &p;
  args.zero_pixel = plan->zero_pixel.data();
  args.window_offsets = plan->window_offsets.data();
  args.filter_taps = plan->filter_taps.data();
  if (threshold != nullptr) {
    // The kernels' layout (bdepthwise_kernels.h): zeros to whole chunks.
    const std::int64_t out_channels = p.out_channels();
    const std::int64_t chunks = (out_channels + kLanes - 1) / kLanes;
    plan->threshold.assign(static_cast<std::size_t>(chunks * kLanes), 0);
    std::copy(threshold, threshold + out_channels, plan->threshold.begin());
    plan->flip_bits = FlipBits(flip, out_channels);
    args.threshold = plan->threshold.data();
    args.flip_bits = plan->flip_bits.data();
  }
  const DepthwiseRowsFn rows = GetKernelPath(kernel).bdepthwise_rows;
  plan->rows = rows != nullptr ? rows : &BDepthwiseRowsPortable;
#if LOWBIT_X86_SIMD
  if (plan->rows == &BDepthwiseRowsAvx512) {
    const std::int64_t bytes = BDepthwiseAvx512PlanBytes(args);
    if (bytes > 0) {
      plan->avx512_storage.reset(new PlanLine[static_cast<std::size_t>((bytes + 63) / 64)]());
      args.avx512_plan = BuildBDepthwiseAvx512Plan(args, plan->avx512_storage.get());
      plan->binarises_float_input = p.depth_multiplier == 1 && p.channels_in % kBitsPerWord == 0;
    }
  }
#endif
  impl_ = std::move(plan);
}

bool BDepthwisePlan::bitpacked() const { return !impl_->threshold.empty(); }
bool BDepthwisePlan::binarises_float_input() const { return impl_->binarises_float_input; }
const BDepthwiseConv2DParams& BDepthwisePlan::params() const { return impl_->params; }

bool BDepthwisePlan::Matches(BConv2DKernel kernel, const BDepthwiseConv2DParams& params,
                             bool bitpacked) const {
  return impl_ != nullptr && impl_->kernel == kernel && SameParams(impl_->params, params) &&
         (!bitpacked || this->bitpacked());
}

bool BDepthwisePlan::SameFilter(const PackedWord* filter) const {
  return std::memcmp(impl_->filter.data(), filter, impl_->filter.size() * sizeof(PackedWord)) ==
         0;
}

namespace {

// The channel-expanded input (DM > 1), then the plan's kernel.
void Run(const BDepthwisePlan::Impl& plan, DepthwiseRowsArgs args, const PackedWord* input,
         ParallelExecutor& executor) {
  const BDepthwiseConv2DParams& p = plan.params;
  std::vector<PackedWord> expanded;
  if (p.depth_multiplier > 1) {
    expanded.resize(static_cast<std::size_t>(p.batch * p.in_h * p.in_w * p.out_words()));
    ExpandChannels(p, input, expanded.data(), executor);
    input = expanded.data();
  }
  args.input = input;
  plan.rows(args, executor);
}

// Run on a float input: binarised in the kernel, or packed into `scratch`.
void RunFloatInput(const BDepthwisePlan::Impl& plan, DepthwiseRowsArgs args, const float* input,
                   PackedWord* scratch, ParallelExecutor& executor) {
  const BDepthwiseConv2DParams& p = plan.params;
  if (plan.binarises_float_input) {
    args.float_input = input;
    Run(plan, args, nullptr, executor);
    return;
  }
  BitpackRows(plan.kernel, input, p.batch * p.in_h * p.in_w, p.channels_in, scratch, executor);
  Run(plan, args, scratch, executor);
}

DepthwiseRowsArgs FloatOutputArgs(const BDepthwisePlan::Impl& plan, const float* multiplier,
                                  const float* bias, float* output) {
  DepthwiseRowsArgs args = plan.args;
  args.multiplier = multiplier;
  args.bias = bias;
  args.output = output;
  return args;
}

DepthwiseRowsArgs BitpackedOutputArgs(const BDepthwisePlan::Impl& plan, PackedWord* output) {
  DepthwiseRowsArgs args = plan.args;
  args.output_bits = output;
  return args;
}

}  // namespace

BConv2DParams PerChannelConvParams(const BDepthwiseConv2DParams& d) {
  BConv2DParams p;
  p.batch = d.batch;
  p.in_h = d.in_h;
  p.in_w = d.in_w;
  p.channels_in = 1;
  // Out of range (and so rejected) when either factor is.
  const bool in_range = d.channels_in >= 1 && d.channels_in <= kMaxDim &&
                        d.depth_multiplier >= 1 && d.depth_multiplier <= kMaxDim;
  p.out_channels = in_range ? d.channels_in * d.depth_multiplier : -1;
  p.kernel_h = d.kernel_h;
  p.kernel_w = d.kernel_w;
  p.stride_h = d.stride_h;
  p.stride_w = d.stride_w;
  p.dilation_h = d.dilation_h;
  p.dilation_w = d.dilation_w;
  p.padding = d.padding;
  p.pad_value = d.pad_value;
  p.activation = d.activation;
  p.out_h = d.out_h;
  p.out_w = d.out_w;
  p.pad_top = d.pad_top;
  p.pad_left = d.pad_left;
  return p;
}

Status CheckBDepthwiseConv2DOptions(const BDepthwiseConv2DParams& p) {
  const struct {
    const char* name;
    std::int64_t value;
  } options[] = {{"channels_in", p.channels_in}, {"depth_multiplier", p.depth_multiplier}};
  for (const auto& o : options) {
    if (o.value < 1 || o.value > kMaxDim) {
      return Status::Error(std::string(o.name) + " must be in [1, " + Str(kMaxDim) + "], got " +
                           Str(o.value));
    }
  }
  if (p.channels_in * p.depth_multiplier > kMaxDim) {  // both <= 2^30: no overflow
    return Status::Error("output channels channels_in * depth_multiplier = " +
                         Str(p.channels_in) + " * " + Str(p.depth_multiplier) +
                         " exceed the supported maximum " + Str(kMaxDim));
  }
  return CheckBConv2DOptions(PerChannelConvParams(p));
}

Status ComputeBDepthwiseConv2DGeometry(BDepthwiseConv2DParams* p) {
  Status s = CheckBDepthwiseConv2DOptions(*p);
  if (!s.ok) return s;
  BConv2DParams conv = PerChannelConvParams(*p);
  s = ComputeBConv2DGeometry(&conv);
  if (!s.ok) return s;
  p->out_h = conv.out_h;
  p->out_w = conv.out_w;
  p->pad_top = conv.pad_top;
  p->pad_left = conv.pad_left;
  // The float input is the largest thing read, the float output the largest
  // written (the expanded input has out_words <= out_channels per pixel).
  if (BoundedProduct({p->batch, p->in_h, p->in_w, p->channels_in, p->depth_multiplier}) < 0 ||
      BoundedProduct({p->batch, p->out_h, p->out_w, p->out_channels()}) < 0) {
    return Status::Error("tensor sizes for batch " + Str(p->batch) + ", input " + Str(p->in_h) +
                         "x" + Str(p->in_w) + " and " + Str(p->out_channels()) +
                         " output channels exceed the supported maximum of " +
                         Str(kMaxElements) + " elements");
  }
  return Status::Ok();
}

std::int64_t DepthwiseFilterWords(const BDepthwiseConv2DParams& p) {
  return p.kernel_h * p.kernel_w * p.out_words();
}

Status ComputeBDepthwiseThresholds(const BDepthwiseConv2DParams& params, const float* multiplier,
                                   const float* bias, std::int32_t* threshold,
                                   std::uint8_t* flip) {
  return ComputeBConv2DThresholds(PerChannelConvParams(params), multiplier, bias, threshold,
                                  flip);
}

void BDepthwiseRowsPortable(const DepthwiseRowsArgs& args, ParallelExecutor& executor) {
  RunDepthwiseRows<TableCounter>(args, executor);
}

void BDepthwiseConv2D(const BDepthwisePlan& plan, const PackedWord* input,
                      const float* multiplier, const float* bias, float* output,
                      ParallelExecutor& executor) {
  Run(plan.impl(), FloatOutputArgs(plan.impl(), multiplier, bias, output), input, executor);
}

void BDepthwiseConv2DBitpacked(const BDepthwisePlan& plan, const PackedWord* input,
                               PackedWord* output, ParallelExecutor& executor) {
  Run(plan.impl(), BitpackedOutputArgs(plan.impl(), output), input, executor);
}

void BDepthwiseConv2DFloatInput(const BDepthwisePlan& plan, const float* input,
                                PackedWord* scratch, const float* multiplier, const float* bias,
                                float* output, ParallelExecutor& executor) {
  RunFloatInput(plan.impl(), FloatOutputArgs(plan.impl(), multiplier, bias, output), input,
                scratch, executor);
}

void BDepthwiseConv2DBitpackedFloatInput(const BDepthwisePlan& plan, const float* input,
                                         PackedWord* scratch, PackedWord* output,
                                         ParallelExecutor& executor) {
  RunFloatInput(plan.impl(), BitpackedOutputArgs(plan.impl(), output), input, scratch, executor);
}

void BDepthwiseConv2D(const BDepthwiseConv2DParams& params, const PackedWord* input,
                      const PackedWord* filter, const float* multiplier, const float* bias,
                      float* output, ParallelExecutor& executor) {
  BDepthwiseConv2D(SelectBConv2DKernel(), params, input, filter, multiplier, bias, output,
                   executor);
}

void BDepthwiseConv2D(BConv2DKernel kernel, const BDepthwiseConv2DParams& params,
                      const PackedWord* input, const PackedWord* filter, const float* multiplier,
                      const float* bias, float* output, ParallelExecutor& executor) {
  BDepthwisePlan plan;
  plan.Prepare(kernel, params, filter);
  BDepthwiseConv2D(plan, input, multiplier, bias, output, executor);
}

void BDepthwiseConv2DBitpacked(const BDepthwiseConv2DParams& params, const PackedWord* input,
                               const PackedWord* filter, const std::int32_t* threshold,
                               const std::uint8_t* flip, PackedWord* output,
                               ParallelExecutor& executor) {
  BDepthwiseConv2DBitpacked(SelectBConv2DKernel(), params, input, filter, threshold, flip,
                            output, executor);
}

void BDepthwiseConv2DBitpacked(BConv2DKernel kernel, const BDepthwiseConv2DParams& params,
                               const PackedWord* input, const PackedWord* filter,
                               const std::int32_t* threshold, const std::uint8_t* flip,
                               PackedWord* output, ParallelExecutor& executor) {
  BDepthwisePlan plan;
  plan.Prepare(kernel, params, filter, threshold, flip);
  BDepthwiseConv2DBitpacked(plan, input, output, executor);
}

void BDepthwiseConv2DFloatInput(BConv2DKernel kernel, const BDepthwiseConv2DParams& params,
                                const float* input, PackedWord* scratch, const PackedWord* filter,
                                const float* multiplier, const float* bias, float* output,
                                ParallelExecutor& executor) {
  BDepthwisePlan plan;
  plan.Prepare(kernel, params, filter);
  BDepthwiseConv2DFloatInput(plan, input, scratch, multiplier, bias, output, executor);
}

void BDepthwiseConv2DBitpackedFloatInput(BConv2DKernel kernel,
                                         const BDepthwiseConv2DParams& params, const float* input,
                                         PackedWord* scratch, const PackedWord* filter,
                                         const std::int32_t* threshold, const std::uint8_t* flip,
                                         PackedWord* output, ParallelExecutor& executor) {
  BDepthwisePlan plan;
  plan.Prepare(kernel, params, filter, threshold, flip);
  BDepthwiseConv2DBitpackedFloatInput(plan, input, scratch, output, executor);
}

}  // namespace lowbit
