// Binary depthwise 2-D convolution on bit-packed NHWC data.
//
//   input   [batch, in_h, in_w, PackedWords(channels_in)]         packed words
//   filter  [kernel_h, kernel_w, PackedWords(channels_in * depth_multiplier)]
//           the Keras depthwise kernel [KH, KW, C, DM] flattened to
//           [KH, KW, C * DM] and bit-packed along the last axis, so that bit o
//           of a tap is the weight of output channel o
//   output  [batch, out_h, out_w, channels_in * depth_multiplier]   float32, or
//           [batch, out_h, out_w, PackedWords(channels_in * depth_multiplier)]
//           packed signs of it (BDepthwiseConv2DBitpacked)
//
// Output channel o = c * depth_multiplier + j (TensorFlow/Keras order) reads
// input channel c = o / depth_multiplier only. Per output pixel and channel,
// over the taps used (below),
//     D_o = sum over taps of x_c * w_o      (+-1 products, exact integer)
//     y_o = multiplier[o] * D_o + bias[o],   optionally max(y_o, 0)  (fused ReLU)
// Padding ("SAME", TensorFlow's geometry) as for the binary conv
// (core/bconv2d.h): pad_value 0 = padded pixels contribute 0 (the tap is not
// used), pad_value 1 = padded pixels are +1 (used like a real pixel).
//
// Per channel this is a binary convolution with one input channel, so the
// geometry, the option checks and the bit-packed output thresholds are those of
// core/bconv2d.h with channels_in = 1 (PerChannelConvParams); |D_o| <= KH * KW.
//
// The kernel works on whole words: per output pixel and 64 output channels it
// XORs input and filter words tap by tap and adds the 64 mismatch bits into
// bit-sliced (vertical) counters, plane p holding bit p of 64 per-channel
// counts, so one tap costs a few word operations whatever the channel count;
// the counts are read out once per block of up to 63 taps. Then, with
// mismatches m_o over the K taps used,  D_o = K - 2 * m_o. The read-out and
// the output transform come in a portable version, an AVX2 one and a NEON one
// (core/bdepthwise_rows.h), picked like the binary conv's kernels
// (SelectBConv2DKernel, LOWBIT_KERNEL). The AVX-512 paths run their own
// kernel (core/bdepthwise_avx512.cc): the same counts, but each output row as
// one bit stream, so that one instruction covers 512 (pixel, channel) pairs
// whatever the channel count, with carry-save counting and, for the
// bit-packed output, a bit-sliced comparison with the thresholds (no
// read-out at all); kernels of more than 63 taps take the AVX2 rows. What
// depends only on the layer (per-tap tables, thresholds, the AVX-512
// kernel's row tables) is built once into a BDepthwisePlan (below).
#ifndef LOWBIT_CORE_BDEPTHWISE_H_
#define LOWBIT_CORE_BDEPTHWISE_H_

#include <cstdint>
#include <memory>

#include "custom_ops/core/bconv2d.h"
#include "custom_ops/core/kernel_table.h"
#include "custom_ops/core/types.h"

namespace lowbit {

struct BDepthwiseConv2DParams {
  // Set by the caller.
  std::int64_t batch = 0;
  std::int64_t in_h = 0, in_w = 0;
  std::int64_t channels_in = 0;  // real input channel count (not words)
  std::int64_t depth_multiplier = 1;
  std::int64_t kernel_h = 0, kernel_w = 0;
  std::int64_t stride_h = 1, stride_w = 1;
  std::int64_t dilation_h = 1, dilation_w = 1;
  Padding padding = Padding::kValid;
  int pad_value = 0;  // 0 or 1; only meaningful with Padding::kSame
  Activation activation = Activation::kNone;

  // Filled in by ComputeBDepthwiseConv2DGeometry.
  std::int64_t out_h = 0, out_w = 0;
  std::int64_t pad_top = 0, pad_left = 0;

  std::int64_t in_words() const { return PackedWords(channels_in); }
  std::int64_t out_channels() const { return channels_in * depth_multiplier; }
  std::int64_t out_words() const { return PackedWords(out_channels()); }
};

// The options as a binary convolution with one input channel and
// channels_in * depth_multiplier output channels (shape fields copied too).
BConv2DParams PerChannelConvParams(const BDepthwiseConv2DParams& params);

// Validates the fields that come from op attributes / custom options:
// channels_in, depth_multiplier, kernel size, strides and dilations in
// [1, 2^30], channels_in * depth_multiplier <= 2^30, pad_value in {0, 1},
// kernel_h * kernel_w <= 2^24 (CheckBConv2DOptions with channels_in = 1).
Status CheckBDepthwiseConv2DOptions(const BDepthwiseConv2DParams& params);

// CheckBDepthwiseConv2DOptions, then the shape fields (batch >= 0, input sizes
// >= 1, a window that fits for VALID, tensor sizes that fit int64 with room to
// spare), and computes the output size and padding. Every kernel requires a
// params struct that passed this.
Status ComputeBDepthwiseConv2DGeometry(BDepthwiseConv2DParams* params);

// Words of the packed filter: kernel_h * kernel_w * PackedWords(C * DM).
std::int64_t DepthwiseFilterWords(const BDepthwiseConv2DParams& params);

// Per-channel (threshold, flip) of the bit-packed output, exactly as for the
// binary conv (core/bconv2d_bitpacked.h) with K = kernel_h * kernel_w, for the
// out_channels() channels. Fails, naming the channel, on a non-finite
// multiplier or bias.
Status ComputeBDepthwiseThresholds(const BDepthwiseConv2DParams& params, const float* multiplier,
                                   const float* bias, std::int32_t* threshold,
                                   std::uint8_t* flip);

// One binary depthwise layer made ready for repeated calls: everything that
// depends only on its geometry, the kernel path and its constant weights,
// built once by Prepare and then read (never written) by every call, so that
// one plan may serve concurrent calls. It holds a copy of the packed filter
// and the per-tap tables of the rows kernels (window offsets, filter taps, a
// zero pixel), the thresholds of a bit-packed output padded to whole
// 64-channel chunks with their flips as bits, and, where the AVX-512 kernel
// runs the layer, that kernel's own plan (bdepthwise_avx512.cc: the filter
// taps repeated along an output row, the thresholds as clamped bytes, the
// per-row tables of D's base and the bit-packed output's count limits, a
// zero input row, the input range of each stride phase). Building it costs
// more than a call of a small layer (14x14x256, stride 2: ~1 us against
// ~0.7 us for the bit-packed call), which is why the op shells keep one per
// layer (custom_ops/tf/bdepthwise_kernel.cc, tflite/bdepthwise_op.cc) and
// rebuild it only when the weights change. The multiplier and bias of a
// float output are not part of it: each call reads them as they are.
class BDepthwisePlan {
 public:
  BDepthwisePlan();
  ~BDepthwisePlan();
  BDepthwisePlan(BDepthwisePlan&&) noexcept;
  BDepthwisePlan& operator=(BDepthwisePlan&&) noexcept;
  BDepthwisePlan(const BDepthwisePlan&) = delete;
  BDepthwisePlan& operator=(const BDepthwisePlan&) = delete;

  // `params` must have passed ComputeBDepthwiseConv2DGeometry; `filter` holds
  // DepthwiseFilterWords(params) words (copied, padding bits ignored). With
  // `threshold` and `flip` (out_channels() each, ComputeBDepthwiseThresholds;
  // copied) the plan also serves the bit-packed output; without, only the
  // float one. `kernel` is the path whose depthwise rows run (ops choose it
  // once, when they are made).
  void Prepare(BConv2DKernel kernel, const BDepthwiseConv2DParams& params,
               const PackedWord* filter, const std::int32_t* threshold = nullptr,
               const std::uint8_t* flip = nullptr);

  bool prepared() const { return impl_ != nullptr; }
  // The rest (but Matches, false then) and the entry points below need a
  // prepared plan.
  // Prepared with thresholds (serves BDepthwiseConv2DBitpacked*).
  bool bitpacked() const;
  // The float-input entry points binarise the input inside the kernel and
  // leave their `scratch` alone (which may then be null).
  bool binarises_float_input() const;
  const BDepthwiseConv2DParams& params() const;
  // Prepared for `kernel`, every field of `params` (the batch too) and, when
  // `bitpacked`, with thresholds.
  bool Matches(BConv2DKernel kernel, const BDepthwiseConv2DParams& params, bool bitpacked) const;
  // The filter words given to Prepare equal `filter`'s
  // (DepthwiseFilterWords(params()) words).
  bool SameFilter(const PackedWord* filter) const;

  // What the dispatch point hands the kernels (bdepthwise.cc).
  struct Impl;
  const Impl& impl() const { return *impl_; }

 private:
  std::unique_ptr<Impl> impl_;  // one heap block: moving the plan moves no table
};

// Float output of a prepared layer (any plan), on its packed input. The
// padding bits of the last input words are ignored, so any packed input is
// accepted. Parallel over output rows.
void BDepthwiseConv2D(const BDepthwisePlan& plan, const PackedWord* input,
                      const float* multiplier, const float* bias, float* output,
                      ParallelExecutor& executor);
// Bit-packed output of a plan prepared with thresholds: bit o of a pixel =
// (D_o < threshold[o]) XOR flip[o] (ComputeBDepthwiseThresholds), bits past
// out_channels() zero.
void BDepthwiseConv2DBitpacked(const BDepthwisePlan& plan, const PackedWord* input,
                               PackedWord* output, ParallelExecutor& executor);
// The same two on the float input [batch, in_h, in_w, channels_in],
// binarised as BitpackRows(kernel, ...) does (core/bitpack.h). Where the
// AVX-512 kernel runs the layer, with depth_multiplier 1 and channels_in a
// multiple of 32, it binarises each input row as it first reads it, straight
// into the row's stride phases: one pass over the floats, no packed copy of
// the input (or of the row) written and read back, the reads spread between
// the rows' counting and output. Otherwise the input is
// packed into `scratch` first (batch * in_h * in_w * in_words() words), which
// is not touched in the fused case (plan.binarises_float_input()).
void BDepthwiseConv2DFloatInput(const BDepthwisePlan& plan, const float* input,
                                PackedWord* scratch, const float* multiplier, const float* bias,
                                float* output, ParallelExecutor& executor);
void BDepthwiseConv2DBitpackedFloatInput(const BDepthwisePlan& plan, const float* input,
                                         PackedWord* scratch, PackedWord* output,
                                         ParallelExecutor& executor);

// The same four for one call, the plan built on the fly (one-off calls and
// tests; a layer called again should keep a BDepthwisePlan). `params` must
// have passed ComputeBDepthwiseConv2DGeometry; the overloads without `kernel`
// choose it on every call (SelectBConv2DKernel).
void BDepthwiseConv2D(const BDepthwiseConv2DParams& params, const PackedWord* input,
                      const PackedWord* filter, const float* multiplier, const float* bias,
                      float* output, ParallelExecutor& executor);
void BDepthwiseConv2D(BConv2DKernel kernel, const BDepthwiseConv2DParams& params,
                      const PackedWord* input, const PackedWord* filter, const float* multiplier,
                      const float* bias, float* output, ParallelExecutor& executor);
void BDepthwiseConv2DBitpacked(const BDepthwiseConv2DParams& params, const PackedWord* input,
                               const PackedWord* filter, const std::int32_t* threshold,
                               const std::uint8_t* flip, PackedWord* output,
                               ParallelExecutor& executor);
void BDepthwiseConv2DBitpacked(BConv2DKernel kernel, const BDepthwiseConv2DParams& params,
                               const PackedWord* input, const PackedWord* filter,
                               const std::int32_t* threshold, const std::uint8_t* flip,
                               PackedWord* output, ParallelExecutor& executor);
void BDepthwiseConv2DFloatInput(BConv2DKernel kernel, const BDepthwiseConv2DParams& params,
                                const float* input, PackedWord* scratch, const PackedWord* filter,
                                const float* multiplier, const float* bias, float* output,
                                ParallelExecutor& executor);
void BDepthwiseConv2DBitpackedFloatInput(BConv2DKernel kernel,
                                         const BDepthwiseConv2DParams& params, const float* input,
                                         PackedWord* scratch, const PackedWord* filter,
                                         const std::int32_t* threshold, const std::uint8_t* flip,
                                         PackedWord* output, ParallelExecutor& executor);

}  // namespace lowbit

#endif  // LOWBIT_CORE_BDEPTHWISE_H_
