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
                          const float* bias);

  const BConv2DFilter& filter() const { return filter_; }
  const std::int32_t* threshold() const { return threshold_.data(); }
  const std::uint8_t* flip() const { return flip_.data(); }

 private:
  const BConv2DKernel kernel_;
  BConv2DFilter filter_;
  // The constant buffer filter_ was laid out from (null: not a constant).
  const void* constant_source_ = nullptr;
  std::vector<std::int32_t> threshold_;
  std::vector<std::uint8_t> flip_;
  // The multiplier and bias the thresholds were computed from (empty: none).
  std::vector<float> transform_;
};

}  // namespace tflite
}  // namespace lowbit

#endif  // LOWBIT_TFLITE_BINARY_OP_UTIL_H_
