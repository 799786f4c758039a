#include "custom_ops/core/bconv2d.h"

#include <bitset>
#include <cstring>
#include <string>
#include <vector>

#include "custom_ops/core/bconv2d_kernels.h"
#include "custom_ops/core/scratch.h"

namespace lowbit {
namespace {

// Largest receptive field (kernel_h * kernel_w * channels_in) we accept: every
// dot product then lies in [-2^24, 2^24], so it is exact in int32 and in float.
constexpr std::int64_t kMaxReceptiveField = std::int64_t{1} << 24;
// Bound on every single dimension, so that products of a few of them stay far
// from int64 overflow.
constexpr std::int64_t kMaxDim = std::int64_t{1} << 30;

std::string Str(std::int64_t v) { return std::to_string(v); }

Status CheckRange(const char* name, std::int64_t value, std::int64_t lo, std::int64_t hi) {
  if (value < lo || value > hi) {
    return Status::Error(std::string(name) + " must be in [" + Str(lo) + ", " + Str(hi) +
                         "], got " + Str(value));
  }
  return Status::Ok();
}

}  // namespace

void ConvAxisGeometry(Padding padding, std::int64_t in, std::int64_t effective_kernel,
                      std::int64_t stride, std::int64_t before, std::int64_t after,
                      std::int64_t* out, std::int64_t* pad_before) {
  if (padding == Padding::kExplicit) {
    const std::int64_t padded = in + before + after;
    *out = padded >= effective_kernel ? (padded - effective_kernel) / stride + 1 : 0;
    *pad_before = before;
  } else if (padding == Padding::kValid) {
    *out = in >= effective_kernel ? (in - effective_kernel) / stride + 1 : 0;
    *pad_before = 0;
  } else {
    *out = (in + stride - 1) / stride;
    const std::int64_t total = (*out - 1) * stride + effective_kernel - in;
    *pad_before = total > 0 ? total / 2 : 0;
  }
}

Status CheckBConv2DOptions(const BConv2DParams& p) {
  const struct {
    const char* name;
    std::int64_t value;
  } options[] = {
      {"channels_in", p.channels_in}, {"kernel_h", p.kernel_h},     {"kernel_w", p.kernel_w},
      {"stride_h", p.stride_h},       {"stride_w", p.stride_w},     {"dilation_h", p.dilation_h},
      {"dilation_w", p.dilation_w},
  };
  for (const auto& o : options) {
    Status s = CheckRange(o.name, o.value, 1, kMaxDim);
    if (!s.ok) return s;
  }
  if (p.pad_value != 0 && p.pad_value != 1) {
    return Status::Error("pad_value must be 0 or 1, got " + Str(p.pad_value));
  }
  const struct {
    const char* name;
    std::int64_t value;
  } pads[] = {
      {"explicit_pad_top", p.explicit_pads.top},
      {"explicit_pad_bottom", p.explicit_pads.bottom},
      {"explicit_pad_left", p.explicit_pads.left},
      {"explicit_pad_right", p.explicit_pads.right},
  };
  for (const auto& pad : pads) {
    Status s = CheckRange(pad.name, pad.value, 0, kMaxDim);
    if (!s.ok) return s;
    if (pad.value != 0 && p.padding != Padding::kExplicit) {
      return Status::Error(std::string(pad.name) + " = " + Str(pad.value) +
                           " needs padding \"EXPLICIT\"");
    }
  }
  // Each factor is <= 2^30, so the products below cannot overflow int64.
  const std::int64_t field = p.kernel_h * p.kernel_w;
  if (field > kMaxReceptiveField || field * p.channels_in > kMaxReceptiveField) {
    return Status::Error("receptive field kernel_h * kernel_w * channels_in = " + Str(p.kernel_h) +
                         " * " + Str(p.kernel_w) + " * " + Str(p.channels_in) +
                         " exceeds the supported maximum " + Str(kMaxReceptiveField));
  }
  return Status::Ok();
}

Status ComputeBConv2DGeometry(BConv2DParams* p) {
  Status s = CheckBConv2DOptions(*p);
  if (!s.ok) return s;
  const struct {
    const char* name;
    std::int64_t value;
    std::int64_t lo;
  } dims[] = {
      {"batch", p->batch, 0},
      {"input height", p->in_h, 1},
      {"input width", p->in_w, 1},
      {"out_channels", p->out_channels, 1},
  };
  for (const auto& d : dims) {
    s = CheckRange(d.name, d.value, d.lo, kMaxDim);
    if (!s.ok) return s;
  }
  const std::int64_t eff_h = (p->kernel_h - 1) * p->dilation_h + 1;
  const std::int64_t eff_w = (p->kernel_w - 1) * p->dilation_w + 1;
  const auto& pads = p->explicit_pads;
  ConvAxisGeometry(p->padding, p->in_h, eff_h, p->stride_h, pads.top, pads.bottom, &p->out_h,
                   &p->pad_top);
  ConvAxisGeometry(p->padding, p->in_w, eff_w, p->stride_w, pads.left, pads.right, &p->out_w,
                   &p->pad_left);
  if (p->out_h == 0 || p->out_w == 0) {
    const bool explicit_pads = p->padding == Padding::kExplicit;
    return Status::Error(std::string(explicit_pads ? "EXPLICIT" : "VALID") +
                         " convolution with a dilated kernel of " + Str(eff_h) + "x" +
                         Str(eff_w) + " does not fit the " + (explicit_pads ? "padded " : "") +
                         "input of " + Str(p->in_h + pads.top + pads.bottom) + "x" +
                         Str(p->in_w + pads.left + pads.right));
  }
  return Status::Ok();
}

Status ParsePadding(const std::string& text, Padding* padding, bool allow_explicit) {
  if (text == "SAME") {
    *padding = Padding::kSame;
  } else if (text == "VALID") {
    *padding = Padding::kValid;
  } else if (text == "EXPLICIT" && allow_explicit) {
    *padding = Padding::kExplicit;
  } else {
    return Status::Error(std::string("padding must be \"SAME\"") +
                         (allow_explicit ? ", \"VALID\" or \"EXPLICIT\"" : " or \"VALID\"") +
                         ", got \"" + text + "\"");
  }
  return Status::Ok();
}

Status ParseActivation(const std::string& text, Activation* activation) {
  if (text == "NONE") {
    *activation = Activation::kNone;
  } else if (text == "RELU") {
    *activation = Activation::kRelu;
  } else {
    return Status::Error("activation must be \"NONE\" or \"RELU\", got \"" + text + "\"");
  }
  return Status::Ok();
}

Status ParseEpilogue(const std::string& text, EpilogueKind* kind) {
  if (text != "none" && text != "affine" && text != "add" && text != "affine_add") {
    return Status::Error(
        "epilogue must be \"none\", \"affine\", \"add\" or \"affine_add\", got \"" + text +
        "\"");
  }
  kind->affine = text == "affine" || text == "affine_add";
  kind->add = text == "add" || text == "affine_add";
  return Status::Ok();
}

std::int64_t CompactFilterWords(std::int64_t kernel_h, std::int64_t kernel_w,
                                std::int64_t channels_in) {
  return PackedWords(kernel_h * kernel_w * channels_in);
}

void UnpackCompactFilter(const BConv2DParams& p, const PackedWord* compact,
                         PackedWord* per_tap) {
  const std::int64_t channels = p.channels_in;
  const std::int64_t words = p.words();
  const std::int64_t taps = p.kernel_h * p.kernel_w;
  const std::int64_t compact_words = CompactFilterWords(p.kernel_h, p.kernel_w, channels);
  const PackedWord tail = TailMask(channels);
  for (std::int64_t co = 0; co < p.out_channels; ++co) {
    const PackedWord* src = compact + co * compact_words;
    PackedWord* dst = per_tap + co * taps * words;
    for (std::int64_t t = 0; t < taps; ++t) {
      for (std::int64_t j = 0; j < words; ++j) {
        // Word j of tap t holds stream bits [start, start + 32): a funnel
        // shift of the two stream words it straddles (the second may be past
        // the end of the stream only when it is not needed).
        const std::int64_t start = t * channels + j * kBitsPerWord;
        const std::int64_t w0 = start / kBitsPerWord;
        const int shift = static_cast<int>(start % kBitsPerWord);
        std::uint64_t pair = src[w0];
        if (shift != 0 && w0 + 1 < compact_words) {
          pair |= static_cast<std::uint64_t>(src[w0 + 1]) << kBitsPerWord;
        }
        PackedWord word = static_cast<PackedWord>(pair >> shift);
        if (j == words - 1) word &= tail;  // bits of the next tap do not belong here
        *dst++ = word;
      }
    }
  }
}

int BConv2DFilter::BlockWidth(BConv2DKernel kernel) {
  return GetKernelPath(kernel).block_width;
}

bool BConv2DFilter::Matches(BConv2DKernel kernel, const BConv2DParams& p) const {
  return prepared_ && kernel_ == kernel && out_channels_ == p.out_channels &&
         kernel_h_ == p.kernel_h && kernel_w_ == p.kernel_w && channels_in_ == p.channels_in;
}

bool BConv2DFilter::SameSource(BConv2DKernel kernel, const BConv2DParams& p,
                               const PackedWord* compact) const {
  if (!Matches(kernel, p) || source_.empty()) return false;
  return std::memcmp(source_.data(), compact, source_.size() * sizeof(PackedWord)) == 0;
}

void BConv2DFilter::Prepare(BConv2DKernel kernel, const BConv2DParams& p,
                            const PackedWord* compact) {
  const std::int64_t taps = p.kernel_h * p.kernel_w;
  std::vector<PackedWord> per_tap(static_cast<std::size_t>(p.out_channels * taps * p.words()));
  UnpackCompactFilter(p, compact, per_tap.data());
  if (BlockWidth(kernel) == 0) {
    data_.assign(per_tap.begin(), per_tap.end());
    tap_popcounts_.clear();
  } else {
    Layout(kernel, p, per_tap.data());
  }
  source_.assign(compact,
                 compact + p.out_channels * CompactFilterWords(p.kernel_h, p.kernel_w, p.channels_in));
  kernel_ = kernel;
  out_channels_ = p.out_channels;
  kernel_h_ = p.kernel_h;
  kernel_w_ = p.kernel_w;
  channels_in_ = p.channels_in;
  prepared_ = true;
}

void BConv2DFilter::PrepareFromPerTap(BConv2DKernel kernel, const BConv2DParams& p,
                                      const PackedWord* per_tap) {
  if (BlockWidth(kernel) == 0) {
    data_.assign(per_tap, per_tap + p.out_channels * p.kernel_h * p.kernel_w * p.words());
    tap_popcounts_.clear();
  } else {
    Layout(kernel, p, per_tap);
  }
  source_.clear();
  kernel_ = kernel;
  out_channels_ = p.out_channels;
  kernel_h_ = p.kernel_h;
  kernel_w_ = p.kernel_w;
  channels_in_ = p.channels_in;
  prepared_ = true;
}

// per_tap [cout][taps][words] -> data_ [block][taps][words][bw] (interleaved)
// or [block][bw][taps][words] (channel-major: per_tap itself, out_channels
// rounded up to whole blocks; on aarch64 with even words its word-pair form,
// see NeonWordPairs), zero channels past cout, and tap_popcounts_
// [block][taps][bw] either way.
void BConv2DFilter::Layout(BConv2DKernel kernel, const BConv2DParams& p,
                           const PackedWord* per_tap) {
  const std::int64_t bw = BlockWidth(kernel);
  const bool channel_major = GetKernelPath(kernel).channel_major;
  const std::int64_t words = p.words();
  // NEON on aarch64: word pairs of 4-channel groups (see NeonWordPairs).
  const bool word_pairs = kernel == BConv2DKernel::kNeon && NeonWordPairs(words);
  const std::int64_t taps = p.kernel_h * p.kernel_w;
  const std::int64_t blocks = (p.out_channels + bw - 1) / bw;
  data_.assign(static_cast<std::size_t>(blocks * taps * words * bw), 0);
  tap_popcounts_.assign(static_cast<std::size_t>(blocks * taps * bw), 0);
  for (std::int64_t co = 0; co < p.out_channels; ++co) {
    const std::int64_t block = co / bw, lane = co % bw;
    const PackedWord* src = per_tap + co * taps * words;
    for (std::int64_t t = 0; t < taps; ++t) {
      std::int32_t pop = 0;
      for (std::int64_t j = 0; j < words; ++j) {
        const PackedWord word = src[t * words + j];
        const std::int64_t k = t * words + j;  // the word within the channel
        std::int64_t at;
        if (word_pairs) {
          const std::int64_t group_words = kNeonPairGroup * taps * words;
          at = block * bw * taps * words + (lane / kNeonPairGroup) * group_words +
               ((k / 2) * kNeonPairGroup + lane % kNeonPairGroup) * 2 + k % 2;
        } else if (channel_major) {
          at = co * taps * words + k;
        } else {
          at = (block * taps * words + k) * bw + lane;
        }
        data_[static_cast<std::size_t>(at)] = word;
        pop += static_cast<std::int32_t>(std::bitset<kBitsPerWord>(word).count());
      }
      tap_popcounts_[static_cast<std::size_t>((block * taps + t) * bw + lane)] = pop;
    }
  }
}

namespace {

// Runs a SIMD kernel: `args` holds the multiplier, bias, epilogue and
// output (float or int8); the input and filter are filled in here.
void RunSimd(const KernelPath& path, const BConv2DParams& params, const PackedWord* input,
             const BConv2DFilter& filter, SimdConvArgs args, ParallelExecutor& executor) {
  const BConv2DParams& p = params;
  const std::int64_t words = p.words();
  const PackedWord tail = TailMask(p.channels_in);
  args.params = &p;
  args.input = input;
  // The kernels read the input in place (they skip padded taps), but need the
  // padding bits past channels_in to be zero: when channels_in is not a whole
  // number of words they get a copy with those bits masked, one pass over the
  // input, far below the convolution.
  std::vector<PackedWord> masked;
  if (tail != ~PackedWord{0}) {
    const std::int64_t pixels = p.batch * p.in_h * p.in_w;
    masked.assign(input, input + pixels * words);
    for (std::int64_t i = 0; i < pixels; ++i) masked[i * words + words - 1] &= tail;
    args.input = masked.data();
  }
  // NEON's kernel (channel-major) adds float residuals only: an int8 one
  // becomes its real values first (BConv2DEpilogue: the same floats), in
  // this thread's scratch (core/scratch.h).
  if (path.channel_major && args.epilogue.residual_int8 != nullptr) {
    const BConv2DEpilogue& e = args.epilogue;
    const std::int64_t count = p.batch * p.out_h * p.out_w * p.out_channels;
    float* residual = ScratchFloats(ScratchSlot::kResidual, count);
    Int8Quantization rq;
    rq.scale = e.residual_scale;
    rq.zero_point = e.residual_zero_point;
    DequantizeInt8Values(e.residual_int8, count, rq, residual, executor);
    args.epilogue.residual = residual;
    args.epilogue.residual_int8 = nullptr;
  }
  args.filter = filter.data();
  args.tap_popcounts = filter.tap_popcounts();
  path.conv_simd(args, executor);
}

// The path's per-tap kernel; the portable one where that is not built here.
PerTapConvFn PerTapConv(const KernelPath& path) {
  return path.conv_per_tap != nullptr ? path.conv_per_tap : &BConv2DPortable;
}

}  // namespace

void BConv2D(const BConv2DParams& params, const PackedWord* input, const BConv2DFilter& filter,
             const float* multiplier, const float* bias, float* output,
             ParallelExecutor& executor, const BConv2DEpilogue& epilogue) {
  const KernelPath& path = GetKernelPath(filter.kernel());
  if (path.conv_simd != nullptr) {
    SimdConvArgs args;
    args.multiplier = multiplier;
    args.bias = bias;
    args.epilogue = epilogue;
    args.output = output;
    RunSimd(path, params, input, filter, args, executor);
  } else if (path.block_width == 0) {
    PerTapConv(path)(params, input, filter.data(), multiplier, bias, epilogue, output, executor);
  }
  // Else a SIMD path not built here, which is never selected: output untouched.
}

bool Int8OutputFused(BConv2DKernel kernel) {
  const KernelPath& path = GetKernelPath(kernel);
  return LOWBIT_X86_SIMD && path.conv_simd != nullptr && !path.channel_major;
}

void BConv2DFusedInt8(const BConv2DParams& params, const PackedWord* input,
                      const BConv2DFilter& filter, const float* multiplier, const float* bias,
                      const BConv2DEpilogue& epilogue,
                      const Int8Quantization& output_quantization, std::int8_t* output,
                      ParallelExecutor& executor) {
  SimdConvArgs args;
  args.multiplier = multiplier;
  args.bias = bias;
  args.epilogue = epilogue;
  args.output_int8 = output;
  args.output_quantization = output_quantization;
  RunSimd(GetKernelPath(filter.kernel()), params, input, filter, args, executor);
}

bool BitpackedOutputFused(BConv2DKernel kernel) { return Int8OutputFused(kernel); }

void BConv2DFusedBitpacked(const BConv2DParams& params, const PackedWord* input,
                           const BConv2DFilter& filter, const std::int32_t* threshold,
                           const std::uint8_t* flip, PackedWord* output,
                           ParallelExecutor& executor) {
  SimdConvArgs args;
  args.output_bits = output;
  args.threshold = threshold;
  args.flip = flip;
  RunSimd(GetKernelPath(filter.kernel()), params, input, filter, args, executor);
}

void BConv2D(BConv2DKernel kernel, const BConv2DParams& params, const PackedWord* input,
             const PackedWord* filter, const float* multiplier, const float* bias,
             float* output, ParallelExecutor& executor, const BConv2DEpilogue& epilogue) {
  if (BConv2DFilter::BlockWidth(kernel) != 0) {
    BConv2DFilter prepared;
    prepared.PrepareFromPerTap(kernel, params, filter);
    BConv2D(params, input, prepared, multiplier, bias, output, executor, epilogue);
    return;
  }
  PerTapConv(GetKernelPath(kernel))(params, input, filter, multiplier, bias, epilogue, output,
                                    executor);
}

}  // namespace lowbit
