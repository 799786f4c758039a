#include "custom_ops/core/bgemm.h"

#include <algorithm>
#include <string>
#include <vector>

#include "custom_ops/core/bgemv_kernels.h"

namespace lowbit {
namespace {

// The limits of the convolution it runs as (core/bconv2d.cc): every dot
// product exact, every dimension small enough for int64 products.
constexpr std::int64_t kMaxChannels = std::int64_t{1} << 24;
constexpr std::int64_t kMaxDim = std::int64_t{1} << 30;

Status CheckRange(const char* name, std::int64_t value, std::int64_t lo, std::int64_t hi) {
  if (value < lo || value > hi) {
    return Status::Error(std::string(name) + " must be in [" + std::to_string(lo) + ", " +
                         std::to_string(hi) + "], got " + std::to_string(value));
  }
  return Status::Ok();
}

// The GEMV kernel BGemm runs (core/bgemv_simd.h) where the filter's kernel
// path has one and 1 <= rows < that path's convolution tile; else nullptr.
SimdGemvFn GemvKernel(const BGemmParams& p, const BConv2DFilter& filter) {
  const KernelPath& path = GetKernelPath(filter.kernel());
  return p.rows >= 1 && p.rows < path.tile_pixels ? path.bgemv : nullptr;
}

// Input rows (with their padding bits) this many words or fewer are masked in
// a buffer on the stack: a batch-1 call of a few microseconds pays no heap
// allocation (2 KiB: 16384 input channels at one row).
constexpr std::int64_t kStackMaskedWords = 512;

void RunGemv(SimdGemvFn gemv, const BGemmParams& p, const PackedWord* input,
             const BConv2DFilter& filter, const float* multiplier, const float* bias,
             float* output, ParallelExecutor& executor) {
  SimdGemvArgs args;
  args.rows = p.rows;
  args.channels_in = p.channels_in;
  args.out_channels = p.out_channels;
  args.relu = p.activation == Activation::kRelu;
  args.input = input;
  args.filter = filter.data();
  args.multiplier = multiplier;
  args.bias = bias;
  args.output = output;
  const PackedWord tail = TailMask(p.channels_in);
  if (tail == ~PackedWord{0}) {
    gemv(args, executor);
    return;
  }
  // The kernels want zero padding bits (the filter's are zero, so they XOR
  // to 0): a masked copy of the few input rows when K is not whole words.
  const std::int64_t words = p.words();
  const std::int64_t size = p.rows * words;
  PackedWord on_stack[kStackMaskedWords];
  std::vector<PackedWord> on_heap;
  PackedWord* masked = on_stack;
  if (size > kStackMaskedWords) {
    on_heap.resize(static_cast<std::size_t>(size));
    masked = on_heap.data();
  }
  std::copy(input, input + size, masked);
  for (std::int64_t r = 0; r < p.rows; ++r) masked[r * words + words - 1] &= tail;
  args.input = masked;
  gemv(args, executor);
}

}  // namespace

BConv2DParams BGemmParams::AsConv2D() const {
  BConv2DParams p;
  p.batch = rows;
  p.in_h = p.in_w = 1;
  p.channels_in = channels_in;
  p.out_channels = out_channels;
  p.kernel_h = p.kernel_w = 1;
  p.padding = Padding::kValid;
  p.activation = activation;
  p.out_h = p.out_w = 1;
  return p;
}

Status CheckBGemmOptions(const BGemmParams& p) {
  return CheckRange("channels_in", p.channels_in, 1, kMaxChannels);
}

Status CheckBGemmShape(const BGemmParams& p) {
  Status s = CheckBGemmOptions(p);
  if (s.ok) s = CheckRange("rows (product of the leading dimensions)", p.rows, 0, kMaxDim);
  if (s.ok) s = CheckRange("out_channels", p.out_channels, 1, kMaxDim);
  return s;
}

void BGemm(const BGemmParams& params, const PackedWord* input, const BConv2DFilter& filter,
           const float* multiplier, const float* bias, float* output,
           ParallelExecutor& executor) {
  if (const SimdGemvFn gemv = GemvKernel(params, filter)) {
    RunGemv(gemv, params, input, filter, multiplier, bias, output, executor);
    return;
  }
  BConv2D(params.AsConv2D(), input, filter, multiplier, bias, output, executor);
}

Status ComputeBGemmThresholds(const BGemmParams& params, const float* multiplier,
                              const float* bias, std::int32_t* threshold, std::uint8_t* flip) {
  return ComputeBConv2DThresholds(params.AsConv2D(), multiplier, bias, threshold, flip);
}

void BGemmBitpacked(const BGemmParams& params, const PackedWord* input,
                    const BConv2DFilter& filter, const std::int32_t* threshold,
                    const std::uint8_t* flip, PackedWord* output, ParallelExecutor& executor) {
  BGemmParams p = params;
  p.activation = Activation::kNone;  // the raw dot product; ReLU is in the thresholds
  // Without the GEMV, BGemm is the 1x1 convolution: its bit-packed output
  // (thresholded in the epilogue of the x86 SIMD kernels).
  if (GemvKernel(p, filter) == nullptr) {
    BConv2DBitpacked(p.AsConv2D(), input, filter, threshold, flip, output, executor);
    return;
  }
  BitpackedFromDotProducts(
      p.rows, p.out_channels,
      [&](const float* ones, const float* zeros, float* dots) {
        BGemm(p, input, filter, ones, zeros, dots, executor);
      },
      threshold, flip, output, executor);
}

}  // namespace lowbit
