// Internal: the binary depthwise kernels behind the dispatch point in
// bdepthwise.cc, one per instruction set (core/bdepthwise_rows.h).
#ifndef LOWBIT_CORE_BDEPTHWISE_KERNELS_H_
#define LOWBIT_CORE_BDEPTHWISE_KERNELS_H_

#include <cstdint>

#include "custom_ops/core/bconv2d_kernels.h"
#include "custom_ops/core/bdepthwise.h"

namespace lowbit {

// The AVX-512 kernel's part of a BDepthwisePlan (bdepthwise_avx512.cc).
struct DepthwiseAvx512Plan;

// What a kernel is given; the dispatch point owns every buffer. A
// BDepthwisePlan holds the fields that depend only on the layer (params, the
// per-tap tables, the thresholds and flips, the AVX-512 plan), and each call
// adds its input and output.
struct DepthwiseRowsArgs {
  const BDepthwiseConv2DParams* params = nullptr;  // passed the geometry check
  // [batch, in_h, in_w, out_words]: bit o of a pixel holds the input channel
  // o / depth_multiplier (the input itself when depth_multiplier is 1).
  const PackedWord* input = nullptr;
  // Or, instead of `input` (which is then null), the float input [batch, in_h,
  // in_w, channels_in], binarised by the kernel as it reads each input row:
  // only given to BDepthwiseRowsAvx512, for depth_multiplier 1, channels_in a
  // multiple of 32 and a shape BDepthwiseAvx512Takes (bdepthwise.cc,
  // BDepthwisePlan::Prepare).
  const float* float_input = nullptr;
  const PackedWord* zero_pixel = nullptr;           // out_words zero words (+1)
  // Per tap (ky * kernel_w + kx): its input offset, in words, from the first
  // pixel of a window that lies inside the input, and its filter words.
  const std::int64_t* window_offsets = nullptr;
  const PackedWord* const* filter_taps = nullptr;
  // Float output ...
  const float* multiplier = nullptr;
  const float* bias = nullptr;
  float* output = nullptr;
  // ... or, when output_bits is set, bit-packed output from the thresholds:
  // threshold padded with zeros to a whole number of 64-channel chunks, and
  // the flips as bits, channel o in bit o % 64 of flip_bits[o / 64].
  const std::int32_t* threshold = nullptr;
  const std::uint64_t* flip_bits = nullptr;
  PackedWord* output_bits = nullptr;
  // BDepthwiseRowsAvx512's plan of the layer, where it takes the layer
  // (BDepthwiseAvx512Takes); built with the thresholds when they are set.
  const DepthwiseAvx512Plan* avx512_plan = nullptr;
};

// Counts read out by byte tables, any CPU.
void BDepthwiseRowsPortable(const DepthwiseRowsArgs& args, ParallelExecutor& executor);
#if LOWBIT_X86_SIMD
// Counts read out with AVX2 (vpshufb + compare), vectorised transform; only
// called after a run-time check.
void BDepthwiseRowsAvx2(const DepthwiseRowsArgs& args, ParallelExecutor& executor);
// AVX-512 F + BW: each output row as one flat bit stream, 512 (pixel,
// channel) lanes per instruction, carry-save counting (bdepthwise_avx512.cc);
// kernels of more than 63 taps go to BDepthwiseRowsAvx2.
void BDepthwiseRowsAvx512(const DepthwiseRowsArgs& args, ParallelExecutor& executor);
// Whether BDepthwiseRowsAvx512 runs `params` itself (else it hands them to the
// AVX2 rows): at most 63 taps, rows and strides within its buffers' bounds.
bool BDepthwiseAvx512Takes(const BDepthwiseConv2DParams& params);
// Its plan of a layer it takes, from the layer's fields of `args` (params,
// filter_taps, and threshold / flip_bits for a bit-packed output): the bytes
// it needs, then built into `storage` (that many bytes, 64-byte aligned, owned
// by the BDepthwisePlan), which it points into.
std::int64_t BDepthwiseAvx512PlanBytes(const DepthwiseRowsArgs& args);
const DepthwiseAvx512Plan* BuildBDepthwiseAvx512Plan(const DepthwiseRowsArgs& args,
                                                     void* storage);
#endif
#if LOWBIT_NEON_SIMD
// Counts read out with NEON (table look-up + bit test), packed signs by
// integer compares and pairwise sums (bdepthwise_neon.cc).
void BDepthwiseRowsNeon(const DepthwiseRowsArgs& args, ParallelExecutor& executor);
#endif

}  // namespace lowbit

#endif  // LOWBIT_CORE_BDEPTHWISE_KERNELS_H_
