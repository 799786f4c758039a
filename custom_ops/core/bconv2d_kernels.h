// Internal: the binary convolution kernels behind the BConv2D dispatch point.
// Each takes a params struct that passed ComputeBConv2DGeometry.
#ifndef LOWBIT_CORE_BCONV2D_KERNELS_H_
#define LOWBIT_CORE_BCONV2D_KERNELS_H_

#include "custom_ops/core/bconv2d.h"
#include "custom_ops/core/int8_io.h"

namespace lowbit {

// Plain loop nest over every output value, tap and channel bit; single thread.
void BConv2DReference(const BConv2DParams& params, const PackedWord* input,
                      const PackedWord* filter, const float* multiplier, const float* bias,
                      const BConv2DEpilogue& epilogue, float* output);

// Blocked popcount kernel in portable C++ (software popcount).
void BConv2DPortable(const BConv2DParams& params, const PackedWord* input,
                     const PackedWord* filter, const float* multiplier, const float* bias,
                     const BConv2DEpilogue& epilogue, float* output,
                     ParallelExecutor& executor);

// The same kernel compiled with the POPCNT instruction (x86 only; elsewhere it
// forwards to the portable kernel).
void BConv2DX86Popcnt(const BConv2DParams& params, const PackedWord* input,
                      const PackedWord* filter, const float* multiplier, const float* bias,
                      const BConv2DEpilogue& epilogue, float* output,
                      ParallelExecutor& executor);

// What the SIMD kernels (core/bconv2d_simd.h) are given. The dispatch point
// (bconv2d.cc, built without ISA flags) owns every buffer, so that the ISA
// translation units instantiate no standard-library templates that the
// linker could share with code running on other CPUs.
struct SimdConvArgs {
  const BConv2DParams* params = nullptr;
  // Packed input [batch, in_h, in_w, words] whose padding bits past
  // channels_in in the last word of a pixel are zero (the dispatch point
  // masks a copy when channels_in is not a whole number of words). The
  // kernels read only taps inside it: padded taps are skipped.
  const PackedWord* input = nullptr;
  const PackedWord* filter = nullptr;  // BConv2DFilter's interleaved layout
  const std::int32_t* tap_popcounts = nullptr;
  const float* multiplier = nullptr;
  const float* bias = nullptr;
  // With an int8 residual only for a kernel that reads one (not NEON's:
  // RunSimd gives it the residual's real values).
  BConv2DEpilogue epilogue;
  float* output = nullptr;
  // Or int8 output (output nullptr), x86 kernels only (Int8OutputFused): y
  // quantized in the epilogue, QuantizeInt8 (core/int8_io.h) bit for bit.
  std::int8_t* output_int8 = nullptr;
  Int8Quantization output_quantization;
  // Or bit-packed output (output and output_int8 nullptr; multiplier, bias
  // and epilogue unused), x86 kernels only (BitpackedOutputFused): bit c of
  // a pixel = (D_c < threshold[c]) XOR flip[c] (core/bconv2d_bitpacked.h),
  // written from the tile's accumulators; [pixels, PackedWords(out_channels)].
  PackedWord* output_bits = nullptr;
  const std::int32_t* threshold = nullptr;
  const std::uint8_t* flip = nullptr;
};

// Whether `kernel` quantizes an int8 output in its own epilogue: the x86
// SIMD kernels (core/bconv2d_simd.h, the interleaved layout). The others
// run BConv2DInt8's two passes.
bool Int8OutputFused(BConv2DKernel kernel);

// Whether `kernel` thresholds a bit-packed output in its own epilogue: the
// same kernels as Int8OutputFused. The others run BConv2DBitpacked's two
// steps (float dot products into a scratch, then BitpackedFromDotProducts).
bool BitpackedOutputFused(BConv2DKernel kernel);

// BConv2DBitpacked of a kernel for which BitpackedOutputFused holds.
void BConv2DFusedBitpacked(const BConv2DParams& params, const PackedWord* input,
                           const BConv2DFilter& filter, const std::int32_t* threshold,
                           const std::uint8_t* flip, PackedWord* output,
                           ParallelExecutor& executor);

// BConv2DInt8 of a kernel for which Int8OutputFused holds.
void BConv2DFusedInt8(const BConv2DParams& params, const PackedWord* input,
                      const BConv2DFilter& filter, const float* multiplier, const float* bias,
                      const BConv2DEpilogue& epilogue,
                      const Int8Quantization& output_quantization, std::int8_t* output,
                      ParallelExecutor& executor);

// The SIMD kernels, each in its own translation unit built with its ISA flags
// (x86 with GCC or Clang only; elsewhere they are neither defined nor
// selected). Only called after the run-time CPU check in SelectBConv2DKernel.
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define LOWBIT_X86_SIMD 1
#else
#define LOWBIT_X86_SIMD 0
#endif
#if defined(__ARM_NEON) || defined(__ARM_NEON__) || defined(__aarch64__)
#define LOWBIT_NEON_SIMD 1
#else
#define LOWBIT_NEON_SIMD 0
#endif
#define LOWBIT_SIMD (LOWBIT_X86_SIMD || LOWBIT_NEON_SIMD)
void BConv2DAvx2(const SimdConvArgs& args, ParallelExecutor& executor);
void BConv2DAvx512Bw(const SimdConvArgs& args, ParallelExecutor& executor);
void BConv2DAvx512(const SimdConvArgs& args, ParallelExecutor& executor);

// Channels per block of the interleaved filter of each SIMD kernel (the
// output channels one micro-kernel call covers at most), and the pixels of its
// full register tile (P in bconv2d_simd.h; BGemm takes its GEMV path,
// core/bgemv_simd.h, below that many rows).
constexpr int kAvx2BlockWidth = 16;
constexpr int kAvx512BlockWidth = 32;
constexpr int kAvx2TilePixels = 4;
constexpr int kAvx512TilePixels = 12;  // VPOPCNTDQ (bconv2d_avx512_common.h)
constexpr int kAvx512BwTilePixels = 8;  // byte popcounts: twice the accumulators

// NEON (core/bconv2d_neon.cc) vectorises the input channels instead, on the
// channel-major filter layout (KernelPath::channel_major): a tile of P pixels
// x C channels, C = kNeonBlockWidth (the block of the layout).
void BConv2DNeon(const SimdConvArgs& args, ParallelExecutor& executor);
#if defined(__aarch64__)
constexpr int kNeonBlockWidth = 8;
constexpr int kNeonTilePixels = 4;
#else
constexpr int kNeonBlockWidth = 4;
constexpr int kNeonTilePixels = 2;
#endif
// aarch64, channels_in a whole number of word PAIRS (words even): within a
// block, the channel-major layout is stored as groups of 4 channels with
// their words interleaved in pairs,
//     blocked[block][group][word / 2][channel % 4][word % 2],
// group = channel / 4, word over the channel's taps x words: 4 channels'
// 128 bits at one word offset are 64 contiguous bytes, which one LD4 (.2d)
// splits back into one register per channel (a chunk of 8 channels: 2 loads
// instead of 8), and 2 words of 4 channels are 32 contiguous bytes that
// already hold the half-chunk layout (channel pairs side by side). The runs
// start at even words (tap * words) and advance by 4 or 2 words, so they
// never split a pair. Odd words (and armv7) keep one channel's taps x words
// contiguous. BConv2DFilter::Layout and core/bconv2d_neon.cc share this rule.
#if defined(__aarch64__)
constexpr bool NeonWordPairs(std::int64_t words) { return words % 2 == 0; }
#else
constexpr bool NeonWordPairs(std::int64_t) { return false; }
#endif
constexpr int kNeonPairGroup = 4;  // channels per group of the word-pair layout

}  // namespace lowbit

#endif  // LOWBIT_CORE_BCONV2D_KERNELS_H_
