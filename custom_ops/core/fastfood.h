// The Adaptive Fastfood transform (Deep Fried Convnets, Yang et al. 2015), the
// forward pass of lowbit_tf.layers.FastfoodDense.
//
// Each row x (width d) is zero-padded to n (a power of two, n >= d) and each of
// the k blocks b computes
//
//     V_b x = (1/n) S_b H G_b Pi_b H B_b x
//
// with H the n x n Sylvester Walsh-Hadamard matrix (H_1 = [1],
// H_2m = [[H_m, H_m], [H_m, -H_m]]), B_b, G_b, S_b diagonal (rows of the [k, n]
// inputs b, g, s) and Pi_b the permutation (Pi v)[j] = v[permutation[b][j]].
// The k * n results are concatenated, the first `units` kept, then
//     y = V x + bias    (when there is a bias)   and    y = max(y, 0) (RELU).
//
// Every float operation is the one the Keras layer performs, in its order
// (lowbit_tf/layers.py, FastfoodDense.call), so that the result is the Keras
// layer's bit for bit:
//   t = pad(x) * b                      (the padding too: 0 * b, a signed zero)
//   t = H t                             butterflies h = 1, 2, 4, ..., n/2, each
//                                       (t[i], t[i+h]) -> (t[i] + t[i+h], t[i] - t[i+h])
//   u[j] = t[perm[j]] * g[j]
//   u = H u
//   y[j] = u[j] * (s[j] * (1/n))        (1/n is exact: n is a power of two)
//   y = y + bias[j];  y = max(y, 0)
// Each of these is one IEEE float32 operation (no FMA: -ffp-contract=off), so
// vectorising them does not change a bit. The TF shell turns off TensorFlow's
// flush-to-zero for our kernels (tf/tf_executor.h), so subnormal intermediates
// agree with TFLite too; only the Keras layer, on TF's ops, flushes them.
//
// int8 input and output (mixed int8 models, core/int8_io.h): an int8 x is
// read as its real values, x = float(q - zero_point) * scale
// (DequantizeInt8, what TFLite's DEQUANTIZE computes), and an int8 output is
// y, computed as above (bias and ReLU included), quantized by QuantizeInt8.
// So an int8 op equals DEQUANTIZE -> float op -> QUANTIZE bit for bit, with
// no float tensor in between.
#ifndef LOWBIT_CORE_FASTFOOD_H_
#define LOWBIT_CORE_FASTFOOD_H_

#include <cstdint>

#include "custom_ops/core/int8_io.h"
#include "custom_ops/core/types.h"

namespace lowbit {

struct FastfoodParams {
  std::int64_t rows = 0;        // rows of the input (product of its leading dims), >= 0
  std::int64_t input_dim = 0;   // d, the width of an input row
  std::int64_t blocks = 0;      // k
  std::int64_t block_size = 0;  // n
  std::int64_t units = 0;       // output width, <= k * n
  Activation activation = Activation::kNone;

  // Blocks that produce kept outputs: ceil(units / n). Later blocks are skipped.
  std::int64_t used_blocks() const { return (units + block_size - 1) / block_size; }
};

// Largest n and k * n accepted (so that k * n values fit in any int32-indexed
// tensor and rows * k * n cannot overflow for any realistic row count).
constexpr std::int64_t kMaxFastfoodSize = std::int64_t{1} << 30;

// n a power of two in [1, 2^30]; 1 <= d <= n; k >= 1 with k * n <= 2^30;
// 1 <= units <= k * n; rows >= 0 with rows * max(k * n, d) fitting in int64.
Status CheckFastfoodParams(const FastfoodParams& params);

// Every row of permutation [k, n] is a permutation of [0, n): each value in
// range, none repeated. Must pass before Fastfood reads through it.
Status CheckFastfoodPermutation(const FastfoodParams& params, const std::int32_t* permutation);

// In-place fast Walsh-Hadamard transform x <- H x of n (a power of two) floats,
// with the butterfly order above: log2(n) stages of n additions/subtractions.
// With lanes > 1, transforms `lanes` vectors at once, stored interleaved:
// value i of vector l at x[i * lanes + l].
void FastWalshHadamard(float* x, std::int64_t n, std::int64_t lanes = 1);

// Rows the forward pass transforms together (interleaved).
constexpr std::int64_t kFastfoodLanes = 8;

// x [rows, d]: float32, or int8 codes (int8: quantization its scale and zero
// point, checked by CheckInt8Quantization).
struct FastfoodInput {
  const void* data = nullptr;
  bool int8 = false;
  Int8Quantization quantization;
};

// out [rows, units]: float32, or int8 codes (int8: quantized with
// `quantization`, checked by CheckInt8Quantization; the op's activation is
// applied to y before, so its relu flag is left false).
struct FastfoodOutput {
  void* data = nullptr;
  bool int8 = false;
  Int8Quantization quantization;
};

// x [rows, d], b/g/s/permutation [k, n], bias [units] or nullptr -> out [rows, units].
// `params` passed CheckFastfoodParams and `permutation` CheckFastfoodPermutation.
void Fastfood(const FastfoodParams& params, const FastfoodInput& x, const float* b,
              const float* g, const float* s, const std::int32_t* permutation, const float* bias,
              const FastfoodOutput& out, ParallelExecutor& executor);

}  // namespace lowbit

#endif  // LOWBIT_CORE_FASTFOOD_H_
