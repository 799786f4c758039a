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
// (transform, activation, fused epilogue), then quantizes it as TFLite's
// QUANTIZE kernel does (tensorflow/lite/kernels/internal/reference/quantize.h):
//     q = clamp(round(y / scale) + zero_point, -128, 127)
// with one float32 division and round() rounding halves AWAY from zero
// (TfLiteRound is std::round), not to even. NaN (a NaN reaching the layer's
// transform) gives zero_point: the C++ conversion of NaN to an integer is
// undefined, TFLite leaves it so; we pin it.
#ifndef LOWBIT_CORE_INT8_IO_H_
#define LOWBIT_CORE_INT8_IO_H_

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
};

// scale finite and > 0, zero_point in [-128, 127]. `tensor` names the
// tensor in the message ("output scale must be finite and > 0, got 0").
Status CheckInt8Quantization(const char* tensor, float scale, std::int64_t zero_point);

// The quantization of y described above. Written so that a loop of it
// vectorises (no libm call, no branch): v = y / scale is clamped to
// [-256, 256] first (saturation makes the clamp invisible: |zero_point| <=
// 128), so the truncating conversion t = int(v) is defined and the
// remainder d = v - t is exact (|v| < 2^8: float keeps every bit); rounding
// halves away from zero is then t + 1 for d >= 0.5 and t - 1 for d <= -0.5,
// which is std::round(v) exactly.
inline std::int8_t QuantizeInt8(float y, const Int8Quantization& q) {
  const float v = y / q.scale;
  const bool nan = v != v;
  float c = v > 256.0f ? 256.0f : v;
  c = c < -256.0f ? -256.0f : c;
  c = nan ? 0.0f : c;
  std::int32_t t = static_cast<std::int32_t>(c);
  const float d = c - static_cast<float>(t);
  t += static_cast<std::int32_t>(d >= 0.5f) - static_cast<std::int32_t>(d <= -0.5f);
  t += q.zero_point;
  const std::int32_t lowest = q.relu ? q.zero_point : -128;
  t = t > 127 ? 127 : t;
  t = t < lowest ? lowest : t;
  return static_cast<std::int8_t>(t);  // NaN: c = 0, so zero_point
}

// out[i] = QuantizeInt8(y[i], q) for i < count.
void QuantizeInt8Values(const float* y, std::int64_t count, const Int8Quantization& q,
                        std::int8_t* out, ParallelExecutor& executor);

// Packs `rows` rows of `channels` int8 codes each into rows of
// PackedWords(channels) words (the bit convention of core/types.h): bit c is
// 1 (value -1) exactly when input[c] < zero_point. Bits past `channels` are 0.
void BitpackInt8Rows(const std::int8_t* input, std::int64_t rows, std::int64_t channels,
                     std::int32_t zero_point, PackedWord* output, ParallelExecutor& executor);

// The real values of int8 codes, for a fused residual read from an int8
// tensor: out[i] = float(q[i] - zero_point) * scale (the integer difference
// is exact in float; one rounding), what TFLite's DEQUANTIZE computes.
void DequantizeInt8Values(const std::int8_t* q, std::int64_t count, const Int8Quantization& quant,
                          float* out, ParallelExecutor& executor);

// The binary convolution with int8 output: BConv2D (transform, activation,
// epilogue: the float path, bit for bit) into `scratch` (one float per output
// value), then QuantizeInt8Values into `output`. Same requirements as BConv2D.
void BConv2DInt8(const BConv2DParams& params, const PackedWord* input,
                 const BConv2DFilter& filter, const float* multiplier, const float* bias,
                 const BConv2DEpilogue& epilogue, const Int8Quantization& output_quantization,
                 float* scratch, std::int8_t* output, ParallelExecutor& executor);

// The binary GEMM with int8 output, likewise (BGemm into `scratch`).
void BGemmInt8(const BGemmParams& params, const PackedWord* input, const BConv2DFilter& filter,
               const float* multiplier, const float* bias,
               const Int8Quantization& output_quantization, float* scratch, std::int8_t* output,
               ParallelExecutor& executor);

// The binary depthwise convolution with int8 output, likewise
// (BDepthwiseConv2D of `kernel` into `scratch`).
void BDepthwiseConv2DInt8(BConv2DKernel kernel, const BDepthwiseConv2DParams& params,
                          const PackedWord* input, const PackedWord* filter,
                          const float* multiplier, const float* bias,
                          const Int8Quantization& output_quantization, float* scratch,
                          std::int8_t* output, ParallelExecutor& executor);

}  // namespace lowbit

#endif  // LOWBIT_CORE_INT8_IO_H_
