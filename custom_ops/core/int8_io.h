// int8 tensors at the boundary of the binary ops, for mixed int8 + binary
// models (the float layers quantized to TFLite's int8 builtins, our ops
// reading and writing their int8 tensors).
//
// An int8 tensor holds codes q with the real value x = scale * (q - zero_point)
// (TFLite's affine, per-tensor quantization; scale > 0).
//
// Input. A binary op only needs sign(x). With scale > 0, x >= 0 iff
// q >= zero_point, so the bit is computed on the codes alone, exactly, with
// the project's convention that zero binarises to +1 (bit 0): bit = q < zp.
//
// Output. The op computes its float output y exactly as its float path does
// (transform, activation, fused epilogue), then quantizes it:
//     q = clamp(round(y * inv_scale) + zero_point, -128, 127),
//     inv_scale = 1.0f / scale     (float32, once per tensor)
// with y * inv_scale one float32 multiplication and round() rounding halves
// AWAY from zero (TfLiteRound is std::round), not to even. NaN (a NaN
// reaching the layer's transform) gives zero_point: the C++ conversion of NaN
// to an integer is undefined, TFLite leaves it so; we pin it.
// Why the reciprocal, not TFLite's reference y / scale: the kernels quantize
// every output value in their epilogue, and a vector division has a small
// fraction of a multiplication's throughput (x86: a zmm divps every several
// cycles, two mulps a cycle); it was the bottleneck of the int8 output
// (the separate quantize pass this replaced: 6% of QuickNet int8). TFLite's
// optimized QUANTIZE (optimized_ops.h, AffineQuantize on NEON) multiplies by
// the reciprocal too. The two definitions differ only where y * inv_scale,
// rounded twice (1 / scale, then the product), lands on the other side of a
// half than y / scale: then by one code. Every kernel and both shells use
// this definition (the SIMD epilogue of core/bconv2d_simd.h bit for bit), so
// they agree exactly.
#ifndef LOWBIT_CORE_INT8_IO_H_
#define LOWBIT_CORE_INT8_IO_H_

#include <cmath>
#include <cstdint>

#include "custom_ops/core/bconv2d.h"
#include "custom_ops/core/bdepthwise.h"
#include "custom_ops/core/bgemm.h"
#include "custom_ops/core/types.h"

namespace lowbit {

// Per-tensor quantization of one int8 tensor.
struct Int8Quantization {
  float scale = 1.0f;
  std::int32_t zero_point = 0;
  // Quantize relu(y) instead of y: the code max(q, zero_point) (quantization
  // is monotone and maps 0 to zero_point, so that is exact).
  bool relu = false;

  // The factor of the output quantization above.
  float inverse_scale() const { return 1.0f / scale; }
  // The lowest code: zero_point with the ReLU, else -128.
  std::int32_t lowest() const { return relu ? zero_point : -128; }
};

// scale finite and > 0, zero_point in [-128, 127]. `tensor` names the
// tensor in the message ("output scale must be finite and > 0, got 0").
Status CheckInt8Quantization(const char* tensor, float scale, std::int64_t zero_point);

// The largest float below 1/2 (0.5 - 2^-25), the rounding offset below.
constexpr float kHalfBelow = 0.49999997f;

// The code of v = y * inv_scale (the quantization above after its
// multiplication), clamped to [lowest, 127]. Written so that a loop of it
// vectorises (no libm call, no branch; int8_io.cc is built with
// -fno-trapping-math for the float selects), and the SIMD epilogue
// (core/bconv2d_simd.h, QuantizeLanes) does the same steps:
//  1. NaN -> 0, then v is clamped to [-256, 256] (saturation makes the clamp
//     invisible: |zero_point| <= 128), so the conversion below is defined;
//  2. round(v) = trunc(v + copysign(h, v)) with h = kHalfBelow, exactly, in
//     float32 round-to-nearest-even arithmetic. For v >= 0 (v < 0 is the
//     mirror image), n = floor(v), f = v - n:
//     - f < 1/2: if n = 0, v <= h (the float below 1/2), so v + h <= 2h =
//       1 - 2^-24, a float, and the sum rounds below 1; if n >= 1, v is a
//       multiple of its ulp u >= 2^-23, f <= 1/2 - u, and v + h < n + 1 - u,
//       a float, so again the sum rounds below n + 1: trunc gives n;
//     - f >= 1/2: v + h >= n + 1 - 2^-25, at least halfway from the float
//       below n + 1 (n + 1 - 2^-24 or further) to n + 1; exactly halfway only
//       for v = 1/2, where the tie goes to the even 1.0. So the sum rounds to
//       at least n + 1, and (< n + 1.5) to less than n + 2: trunc gives n + 1.
//     (v + copysign(1/2, v) would not do: 0.49999997 + 0.5 rounds to 1.)
inline std::int8_t QuantizeInt8Scaled(float v, std::int32_t zero_point, std::int32_t lowest) {
  float c = v != v ? 0.0f : v;
  c = c > 256.0f ? 256.0f : c;
  c = c < -256.0f ? -256.0f : c;
  std::int32_t t = static_cast<std::int32_t>(c + std::copysign(kHalfBelow, c));
  t += zero_point;
  t = t > 127 ? 127 : t;
  t = t < lowest ? lowest : t;
  return static_cast<std::int8_t>(t);
}

// The quantization of y described above (one value; loops hoist the
// reciprocal, QuantizeInt8Values computes it once).
inline std::int8_t QuantizeInt8(float y, const Int8Quantization& q) {
  return QuantizeInt8Scaled(y * q.inverse_scale(), q.zero_point, q.lowest());
}

// out[i] = QuantizeInt8(y[i], q) for i < count.
void QuantizeInt8Values(const float* y, std::int64_t count, const Int8Quantization& q,
                        std::int8_t* out, ParallelExecutor& executor);

// Packs `rows` rows of `channels` int8 codes each into rows of
// PackedWords(channels) words (the bit convention of core/types.h): bit c is
// 1 (value -1) exactly when input[c] < zero_point. Bits past `channels` are 0.
void BitpackInt8Rows(const std::int8_t* input, std::int64_t rows, std::int64_t channels,
                     std::int32_t zero_point, PackedWord* output, ParallelExecutor& executor);

// The real value of an int8 code, float(q - zero_point) * scale (TFLite's
// DEQUANTIZE): the subtraction is exact in int32, then one rounding.
inline float DequantizeInt8(std::int8_t q, const Int8Quantization& quant) {
  return static_cast<float>(static_cast<std::int32_t>(q) - quant.zero_point) * quant.scale;
}

// The real values of int8 codes, float(q[i] - zero_point) * scale
// (BConv2DEpilogue::ResidualInt8, what TFLite's DEQUANTIZE computes), for a
// kernel that cannot read an int8 residual itself (NEON: core/bconv2d.cc).
void DequantizeInt8Values(const std::int8_t* q, std::int64_t count, const Int8Quantization& quant,
                          float* out, ParallelExecutor& executor);

// The binary convolution with int8 output: y as BConv2D computes it
// (transform, activation, epilogue with a float or int8 residual: the float
// path, bit for bit), quantized as above. The x86 SIMD kernels quantize in
// their epilogue, in registers, and store the codes (core/bconv2d_simd.h):
// no float output anywhere. The other kernels write the floats into
// `scratch`, then QuantizeInt8Values. `scratch` holds
// BConv2DInt8ScratchSize(filter.kernel(), params) floats (nullptr if 0).
// Same requirements as BConv2D.
void BConv2DInt8(const BConv2DParams& params, const PackedWord* input,
                 const BConv2DFilter& filter, const float* multiplier, const float* bias,
                 const BConv2DEpilogue& epilogue, const Int8Quantization& output_quantization,
                 float* scratch, std::int8_t* output, ParallelExecutor& executor);

// Floats of BConv2DInt8's scratch with `kernel`: 0 for the kernels that
// quantize in their epilogue, one per output value for the others.
std::int64_t BConv2DInt8ScratchSize(BConv2DKernel kernel, const BConv2DParams& params);

// The binary GEMM with int8 output: BGemm into `scratch` (one float per
// output value), then QuantizeInt8Values.
void BGemmInt8(const BGemmParams& params, const PackedWord* input, const BConv2DFilter& filter,
               const float* multiplier, const float* bias,
               const Int8Quantization& output_quantization, float* scratch, std::int8_t* output,
               ParallelExecutor& executor);

// The binary depthwise convolution with int8 output, likewise
// (BDepthwiseConv2D of the prepared layer into `scratch`).
void BDepthwiseConv2DInt8(const BDepthwisePlan& plan, const PackedWord* input,
                          const float* multiplier, const float* bias,
                          const Int8Quantization& output_quantization, float* scratch,
                          std::int8_t* output, ParallelExecutor& executor);

}  // namespace lowbit

#endif  // LOWBIT_CORE_INT8_IO_H_
