// Bit-packed output of the binary convolution ("output_type = bitpacked"),
// so that a chain of binary layers never unpacks between them.
//
// The next binary layer binarises the float output of LowbitBconv2d,
//     y_c = float(D) * m_c + b_c        (two float32 roundings, no FMA)
//     optionally y_c = max(y_c, 0)      (fused ReLU)
// with the project's sign: bit 1 (value -1) iff y_c is a negative normal
// number or -inf (subnormals count as zero, see core/bitpack.h). This file
// computes that bit from the integer dot product D alone.
//
// Derivation. Float rounding is monotone (x <= x' implies fl(x) <= fl(x')),
// so for finite m_c > 0 the map D -> fl(fl(D * m_c) + b_c) is non-decreasing
// (overflow to +-inf included), and "y is negative" is a down-set of D: there
// is one integer t_c such that bit = 1 iff D < t_c. For m_c < 0 the map is
// non-increasing and bit = 1 iff D >= t_c, i.e. iff NOT (D < t_c). In exact
// arithmetic t_c would be ceil(-b_c / m_c) (or the next integer); the float
// roundings of the kernel can move the flip point by one, so t_c is instead
// found by evaluating the kernel's exact float expression: a binary search
// over D in [-K, K + 1] (K = kernel_h * kernel_w * channels_in bounds |D|),
// O(log K) evaluations per channel, valid by the monotonicity above. For
// m_c == 0 (either sign) y_c = b_c (or +0 for b_c == +-0) whatever D, so the
// bit is constant. With a fused ReLU, y_c >= 0 (or -0.0), never negative: the
// bit is always 0 (+1), whatever m_c and b_c.
//
// Every case is stored as (threshold t_c, flip f_c) with
//     bit = (D < t_c) XOR f_c,
// a constant bit v being t_c = -K (D < -K never holds) and f_c = v. The
// kernel then compares integers only and reproduces the float path's bits
// exactly. Non-finite m_c or b_c (where the float expression is no longer
// monotone, e.g. inf * 0 = NaN) are rejected.
#ifndef LOWBIT_CORE_BCONV2D_BITPACKED_H_
#define LOWBIT_CORE_BCONV2D_BITPACKED_H_

#include <cstdint>
#include <functional>
#include <string>

#include "custom_ops/core/bconv2d.h"

namespace lowbit {

// kInt8: the float output quantized to int8 (core/int8_io.h), LowbitBconv2d
// and LowbitBgemm only.
enum class OutputType { kFloat, kBitpacked, kInt8 };

// "float", "bitpacked" or "int8" (each op's contract entry says which it takes).
Status ParseOutputType(const std::string& text, OutputType* type);

// Per-channel (threshold, flip) of the derivation above, for the options in
// `params` (CheckBConv2DOptions: kernel size, channels_in, activation) and
// params.out_channels channels. Fails, naming the channel, when a multiplier
// or bias is not finite.
Status ComputeBConv2DThresholds(const BConv2DParams& params, const float* multiplier,
                                const float* bias, std::int32_t* threshold,
                                std::uint8_t* flip);

// The binary convolution with bit-packed output:
//   output [batch, out_h, out_w, PackedWords(out_channels)] words, bit c of a
//   pixel = (D_c < threshold[c]) XOR flip[c]; padding bits past out_channels 0.
// Same requirements on params / filter as BConv2D. The x86 SIMD kernels
// (BitpackedOutputFused, core/bconv2d_kernels.h) compare their tile's dot
// products with the thresholds in the epilogue and store the bits: no float
// scratch, no second pass. The others run the kernel for the integer dot
// products (multiplier 1, bias 0: exact in float) into a scratch buffer and
// pack them with the integer thresholds (BitpackedFromDotProducts).
void BConv2DBitpacked(const BConv2DParams& params, const PackedWord* input,
                      const BConv2DFilter& filter, const std::int32_t* threshold,
                      const std::uint8_t* flip, PackedWord* output, ParallelExecutor& executor);

// The packing step shared by BConv2DBitpacked and BGemmBitpacked:
// dots(ones, zeros, out) must run the layer with multiplier `ones`, bias
// `zeros` (out_channels each) and no activation into out [pixels,
// out_channels], i.e. write float(D) exactly (|D| <= 2^24); output [pixels,
// PackedWords(out_channels)] then gets bit c = (D_c < threshold[c]) XOR flip[c].
using DotProductFn = std::function<void(const float* ones, const float* zeros, float* dots)>;
void BitpackedFromDotProducts(std::int64_t pixels, std::int64_t out_channels,
                              const DotProductFn& dots, const std::int32_t* threshold,
                              const std::uint8_t* flip, PackedWord* output,
                              ParallelExecutor& executor);

}  // namespace lowbit

#endif  // LOWBIT_CORE_BCONV2D_BITPACKED_H_
