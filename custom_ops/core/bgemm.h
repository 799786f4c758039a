// Binary GEMM (a binary dense layer) on bit-packed rows.
//
//   input   [rows, PackedWords(channels_in)]           packed words
//   filter  [out_channels, PackedWords(channels_in)]   the bit-packing of the
//           transposed Keras kernel [channels_in, out_channels]
//   output  [rows, out_channels] float32, or [rows, PackedWords(out_channels)]
//           packed signs of that float output (core/bconv2d_bitpacked.h)
//
// For every row r and output channel c:
//     y = multiplier[c] * dot(x[r], w[c]) + bias[c],  optionally max(y, 0)
// with dot = K - 2 * popcount(x XOR w) over K = channels_in values.
//
// This is exactly a 1x1 binary convolution whose pixels are the rows: batch =
// rows, a 1x1 image of channels_in channels, a 1x1 kernel, stride 1, VALID.
// Its compact filter, CompactFilterWords(1, 1, K) = PackedWords(K) words per
// output channel with the channels in order, is the filter above bit for bit,
// so BGemm runs the convolution kernels unchanged (every SIMD path included:
// their tiles span consecutive pixels, here consecutive rows) and a filter is
// prepared with BConv2DFilter on AsConv2D().
//
// Small batches: with fewer rows than an x86 SIMD kernel's register tile
// (AVX-512: 12 or 8, AVX2: 4) BGemm runs a GEMV kernel on the same prepared
// filter instead (core/bgemv_simd.h: the weights read once per call, several
// channel blocks in flight per input word), bit-identical to the convolution
// path. NEON has no GEMV entry: its micro-kernels vectorise the input
// channels, so the 1- and 2-row tiles already read each weight once.
#ifndef LOWBIT_CORE_BGEMM_H_
#define LOWBIT_CORE_BGEMM_H_

#include <cstdint>

#include "custom_ops/core/bconv2d.h"
#include "custom_ops/core/bconv2d_bitpacked.h"
#include "custom_ops/core/types.h"

namespace lowbit {

struct BGemmParams {
  std::int64_t rows = 0;          // product of the input's leading dimensions
  std::int64_t channels_in = 0;   // K, real value count (not words)
  std::int64_t out_channels = 0;  // N_out
  Activation activation = Activation::kNone;

  std::int64_t words() const { return PackedWords(channels_in); }
  // The 1x1 convolution above, geometry included (out_h = out_w = 1). It
  // passes ComputeBConv2DGeometry when this passed CheckBGemmShape.
  BConv2DParams AsConv2D() const;
};

// channels_in in [1, 2^24] (every dot product exact in int32 and float, as
// for the convolution's receptive field).
Status CheckBGemmOptions(const BGemmParams& params);
// CheckBGemmOptions, then rows in [0, 2^30] and out_channels in [1, 2^30].
// Every function below requires params that passed this.
Status CheckBGemmShape(const BGemmParams& params);

// Float output. `filter` must have been prepared for params.AsConv2D().
// Padding bits of the last input word of a row are ignored.
void BGemm(const BGemmParams& params, const PackedWord* input, const BConv2DFilter& filter,
           const float* multiplier, const float* bias, float* output,
           ParallelExecutor& executor);

// Per-channel thresholds of the bit-packed output (ComputeBConv2DThresholds
// with K = channels_in).
Status ComputeBGemmThresholds(const BGemmParams& params, const float* multiplier,
                              const float* bias, std::int32_t* threshold, std::uint8_t* flip);

// Bit-packed output: bit c of row r = (D < threshold[c]) XOR flip[c]
// (BConv2DBitpacked of the 1x1 convolution where the GEMV does not run: the
// x86 SIMD kernels threshold in their epilogue).
void BGemmBitpacked(const BGemmParams& params, const PackedWord* input,
                    const BConv2DFilter& filter, const std::int32_t* threshold,
                    const std::uint8_t* flip, PackedWord* output, ParallelExecutor& executor);

}  // namespace lowbit

#endif  // LOWBIT_CORE_BGEMM_H_
