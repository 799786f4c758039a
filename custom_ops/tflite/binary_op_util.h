// What the TFLite shells of LowbitBconv2d and LowbitBgemm share: the checks of
// their weight inputs and of the buffers handed to Eval, and the weights laid
// out once for the kernel (the filter, and the integer thresholds of a
// bit-packed output) and kept while the constants they come from are unchanged.
#ifndef LOWBIT_TFLITE_BINARY_OP_UTIL_H_
#define LOWBIT_TFLITE_BINARY_OP_UTIL_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "custom_ops/core/bconv2d.h"
#include "custom_ops/core/bconv2d_bitpacked.h"
#include "custom_ops/tflite/flexbuffer_reader.h"
#include "custom_ops/tflite/op_registry.h"

namespace lowbit {
namespace tflite {

// The four inputs (input, filter, multiplier, bias) are all there (and
// `extra_inputs` more after them, which the caller checks), the filter is
// INT32 (packed words; the TF ops' float filters are for training and never
// reach a .tflite file: the converter packs them) and multiplier and bias are
// FLOAT32. Their shapes are the core's CheckBConv2DShapes / CheckBGemmShapes
// (core/op_shapes.h). Messages carry no op name (the caller prefixes it).
Status CheckBinaryOpTypes(const std::vector<TensorRef>& inputs, std::size_t extra_inputs = 0);

// The names of the four inputs of the binary ops, for messages.
extern const char* const kBinaryOpInputNames[4];

// Input 0 of the binary ops: FLOAT32 (binarised here), INT32 (packed words)
// or INT8 (quantized per tensor; only its zero point matters: a code below it
// is -1, core/int8_io.h). An INT8 input's quantization is checked here.
struct BinaryOpInput {
  TfLiteType type = kTfLiteFloat32;
  std::int32_t zero_point = 0;  // of an INT8 input

  Status Read(const TensorRef& input);
  bool packed() const { return type == kTfLiteInt32; }
  // Bytes of `elements` input values (4 or 1 each; 0 on overflow).
  std::size_t Bytes(std::int64_t elements) const;
  // The input's words: a packed input as it is, else `rows` rows of
  // `channels` values packed into `scratch` (PackedWords(channels) per row,
  // sized by the caller) by the packer of `kernel` or BitpackInt8Rows.
  const PackedWord* Pack(BConv2DKernel kernel, const TensorRef& input, std::int64_t rows,
                         std::int64_t channels, PackedWord* scratch,
                         ParallelExecutor& executor) const;
};

// The tensor type of an output of `type`: FLOAT32, INT32 (bit-packed), INT8.
TfLiteType OutputTensorType(OutputType type);
// Bytes of `elements` output values of `type` (0 on overflow).
std::size_t OutputBytes(OutputType type, std::int64_t elements);

// The per-channel (threshold, flip) of a bit-packed output
// (ComputeBConv2DThresholds for `params`; the depthwise conv's is its
// per-channel view, PerChannelConvParams), recomputed only when the
// multiplier or bias values differ from those they were computed from
// (2 * C floats compared; the computation is O(C * log K) float evaluations,
// as long as a small layer's whole convolution).
class CachedThresholds {
 public:
  // Fails (naming the channel) on a non-finite multiplier or bias; *computed
  // (optional) tells whether they were recomputed.
  Status Update(const BConv2DParams& params, const float* multiplier, const float* bias,
                bool* computed = nullptr);
  // Forgets the values (new shapes): the next Update computes.
  void Clear() { transform_.clear(); }

  const std::int32_t* threshold() const { return threshold_.data(); }
  const std::uint8_t* flip() const { return flip_.data(); }

 private:
  std::vector<std::int32_t> threshold_;
  std::vector<std::uint8_t> flip_;
  // The multiplier and bias the thresholds were computed from (empty: none).
  std::vector<float> transform_;
};

// The filter laid out for one kernel (BConv2DFilter) and the thresholds of a
// bit-packed output, for the binary convolution `params` (the gemm's is its
// 1x1 view, BGemmParams::AsConv2D). Each is rebuilt only when its source
// words differ from the last ones: comparing them costs far less than the
// convolution and keeps the result right if they are not constants. A filter
// that is a read-only constant of the model is not even compared again once
// laid out from the same buffer (for a 3x3x512->512 conv the comparison reads
// 295 KB per invocation, about 10% of the convolution's time).
class PreparedWeights {
 public:
  explicit PreparedWeights(BConv2DKernel kernel) : kernel_(kernel) {}

  // `filter`: the compact packed words (TensorRef::data), checked by the caller.
  void UpdateFilter(const BConv2DParams& params, const TensorRef& filter);
  // Fails (naming the channel) on a non-finite multiplier or bias.
  Status UpdateThresholds(const BConv2DParams& params, const float* multiplier,
                          const float* bias) {
    return thresholds_.Update(params, multiplier, bias);
  }

  const BConv2DFilter& filter() const { return filter_; }
  const std::int32_t* threshold() const { return thresholds_.threshold(); }
  const std::uint8_t* flip() const { return thresholds_.flip(); }

 private:
  const BConv2DKernel kernel_;
  BConv2DFilter filter_;
  // The constant buffer filter_ was laid out from (null: not a constant).
  const void* constant_source_ = nullptr;
  CachedThresholds thresholds_;
};

}  // namespace tflite
}  // namespace lowbit

#endif  // LOWBIT_TFLITE_BINARY_OP_UTIL_H_
