// Multi-bit 2-D convolution as a sum of binary convolutions (ABC-Net,
// DoReFa-Net, ternary or k-bit weights).
//
// Both operands are written as scaled sums of {-1, +1} planes:
//   weights      W[.., c] = sum_m alpha[m][c] * B_m[.., c]      m < M
//   activations  A        = sum_p beta[p]    * H_p              p < P
// and convolution is bilinear, so for every output pixel and channel c
//   conv(A, W)[c] = sum_p beta[p] * sum_m alpha[m][c] * dot(H_p, B_m[.., c])
// with integer +-1 dot products: P * M binary convolutions, each computed with
// XOR + popcount by the binary convolution kernels (core/bconv2d.h), then
//   y[c] = sum_p beta[p] * (sum_m alpha[m][c] * dot_pm[c]) + bias[c]
// (summed in exactly this order, in float32, in both shells), optionally ReLU.
//
// The activation planes H_p come from the float input x, per activation mode:
//   kSign    P = 1      H = sign(x), the bit-packing rule (x >= 0 -> +1).
//   kAbc     P = N      ABC-Net's H_v(x) = sign(clip(x + v_p, 0, 1) - 0.5), which
//                       is +1 iff fl(x + v_p) >= 0.5 (the clip does not move
//                       values across 0.5, and for fl(x + v) in [0.25, 1] the
//                       subtraction of 0.5 is exact), v_p = shifts[p].
//   kDoReFa  P = k + 1  DoReFa's k-bit activation a = q / n, n = 2^k - 1,
//                       q = round_half_even(fl(clip(x, 0, 1) * n)) (tf.round).
//                       With b_p the bits of q and H_p = 2 b_p - 1:
//                         a = sum_p 2^p b_p / n = 1/2 + sum_p (2^p / (2n)) H_p
//                       (sum_p 2^p = n), so planes p < k are the bits of q with
//                       beta_p = 2^p / (2n), and plane k is +1 everywhere with
//                       beta_k = 1/2.
//   The betas are an input in every mode (the converter writes them), so the
//   op only decides where the planes come from.
//
// Padding ("SAME", pad_value as in core/bconv2d.h) applies to every plane:
//   pad_value 0: padded pixels contribute 0 to every plane's dot, i.e. the
//     quantized activation is 0 there (zero padding after quantization);
//   pad_value 1: padded pixels are +1 in every plane: a = sum_p beta_p (1 for
//     DoReFa, as padding the quantized input with 1.0).
//
// Other input and output types (MultibitInput, MultibitOutput), for int8
// models and packed chains of binary layers:
//   int8 input (codes q, per-tensor scale and zero point, core/int8_io.h):
//     the planes of the real value x = float(q - zero_point) * scale (one
//     float32 rounding, what TFLite's DEQUANTIZE computes), bit for bit as
//     the float path computes them from that x: kSign reads q < zero_point
//     (x < 0 exactly, scale > 0: BitpackInt8Rows, as the binary ops); kAbc
//     and kDoReFa look every code up in a table of its planes' bits, built
//     from the 256 dequantized values by the float path's own rules
//     (AbcPlaneBit, DoReFaLevel below), so no other arithmetic is involved.
//   packed input (kSign only): the single plane's words as they are, e.g.
//     the bit-packed output of the binary layer before.
//   int8 output: the float output y quantized like the other ops'
//     (QuantizeInt8Values, core/int8_io.h).
//   bit-packed output: the signs of the float output y with the bit-packing
//     rule (BitpackRows: negative normal numbers and -inf are -1), i.e. the
//     very words the next binary layer would pack from y. Unlike
//     LowbitBconv2d's, y is a float combination of P * M dot products, so it
//     is not a monotone function of one integer and no integer threshold
//     replaces it: y is computed per image and packed.
#ifndef LOWBIT_CORE_MULTIBIT_CONV2D_H_
#define LOWBIT_CORE_MULTIBIT_CONV2D_H_

#include <cstdint>
#include <string>
#include <vector>

#include "custom_ops/core/bconv2d.h"
#include "custom_ops/core/bconv2d_bitpacked.h"
#include "custom_ops/core/int8_io.h"
#include "custom_ops/core/types.h"

namespace lowbit {

enum class ActivationPlanes { kSign, kAbc, kDoReFa };

Status ParseActivationPlanes(const std::string& text, ActivationPlanes* mode);

struct MultibitConv2DParams {
  // Options, input shape and out_channels (channels per weight plane) of the
  // convolution; its activation is the fused one applied to y.
  BConv2DParams conv;
  std::int64_t weight_planes = 1;   // M
  ActivationPlanes activation_mode = ActivationPlanes::kSign;
  std::int64_t activation_bits = 0;  // k, kDoReFa only
  std::int64_t num_shifts = 0;       // N, kAbc only (the length of `shifts`)

  // P: the number of activation planes (and betas).
  std::int64_t activation_planes() const;
};

// Validates the options: the convolution's (CheckBConv2DOptions), M in
// [1, 64], and per mode kSign: num_shifts 0 and activation_bits 0; kAbc:
// num_shifts in [1, 64]; kDoReFa: activation_bits in [1, 16] and num_shifts 0.
Status CheckMultibitConv2DOptions(const MultibitConv2DParams& params);

// CheckMultibitConv2DOptions, ComputeBConv2DGeometry of params->conv, and the
// scratch sizes below within bounds.
Status ComputeMultibitConv2DGeometry(MultibitConv2DParams* params);

// The binary convolution that computes all P * M plane dot products of one
// image: a "batch" of the P activation planes against a filter of M * C_out
// output channels (weight plane m, channel c -> output channel m * C_out + c),
// no activation, multiplier 1, bias 0. The filter [M, C_out, words] of the op
// is that filter's compact layout [M * C_out, words] as it is, so
// BConv2DFilter::Prepare(kernel, PlaneConvParams(p), filter) lays it out.
BConv2DParams PlaneConvParams(const MultibitConv2DParams& params);

// Where the activation planes come from (see the top of this file).
enum class MultibitInputType { kFloat, kInt8, kPacked };

struct MultibitInput {
  MultibitInputType type = MultibitInputType::kFloat;
  // [batch, in_h, in_w, channels_in] float32 or int8 codes, or (kPacked)
  // [batch, in_h, in_w, PackedWords(channels_in)] words.
  const void* data = nullptr;
  Int8Quantization quantization;  // kInt8: the codes' scale and zero point
};

struct MultibitOutput {
  OutputType type = OutputType::kFloat;
  // [batch, out_h, out_w, C_out] float32 or int8, or (kBitpacked)
  // [batch, out_h, out_w, PackedWords(C_out)] words.
  void* data = nullptr;
  Int8Quantization quantization;  // kInt8
};

// The input and output types `params` can take: a packed input needs
// activation mode kSign (it is that one plane).
Status CheckMultibitConv2DTypes(const MultibitConv2DParams& params, MultibitInputType input);

// Buffers one call needs (per image, reused across the batch).
struct MultibitConv2DScratch {
  std::vector<PackedWord> planes;  // [P, in_h, in_w, words]
  std::vector<float> dots;         // [P, out_h, out_w, M * C_out]
  std::vector<float> ones, zeros;  // [M * C_out]
  std::vector<float> values;       // [out_h, out_w, C_out]: y of an int8 / packed output
  std::vector<std::uint64_t> code_planes;  // [256]: plane bits of each int8 code
};

// Runs the convolution for params (which passed ComputeMultibitConv2DGeometry
// and CheckMultibitConv2DTypes) on `input`, with `filter` prepared from
// PlaneConvParams(params), shifts [num_shifts], alphas [M, C_out], betas [P],
// bias [C_out], into `output`.
void MultibitConv2D(const MultibitConv2DParams& params, const MultibitInput& input,
                    const float* shifts, const BConv2DFilter& filter, const float* alphas,
                    const float* betas, const float* bias, const MultibitOutput& output,
                    MultibitConv2DScratch* scratch, ParallelExecutor& executor);

// The activation planes of `pixels` pixels of float input (for tests and the
// above): planes[p][pixel][word], bit convention of core/types.h. kSign packs
// with the bit-packing step of `kernel` (the kernel the filter was prepared
// for: no kernel choice per call).
void PackActivationPlanes(BConv2DKernel kernel, const MultibitConv2DParams& params,
                          const float* input, std::int64_t pixels, const float* shifts,
                          PackedWord* planes, ParallelExecutor& executor);

// The same planes of int8 codes: those of their dequantized values (see the
// top of this file). `code_planes` holds 256 entries of scratch.
void PackInt8ActivationPlanes(const MultibitConv2DParams& params, const std::int8_t* input,
                              const Int8Quantization& quantization, std::int64_t pixels,
                              const float* shifts, std::uint64_t* code_planes,
                              PackedWord* planes, ParallelExecutor& executor);

}  // namespace lowbit

#endif  // LOWBIT_CORE_MULTIBIT_CONV2D_H_
