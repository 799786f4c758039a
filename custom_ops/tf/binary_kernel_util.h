// What the TF kernels of LowbitBconv2d and LowbitBgemm share: the output
// attributes, packing a float input or a float (Keras) kernel on the fly, and
// the cache of the filter laid out for the chosen binary kernel.
#ifndef LOWBIT_TF_BINARY_KERNEL_UTIL_H_
#define LOWBIT_TF_BINARY_KERNEL_UTIL_H_

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "custom_ops/core/bconv2d.h"
#include "custom_ops/core/bconv2d_bitpacked.h"
#include "custom_ops/core/int8_io.h"
#include "custom_ops/core/op_shapes.h"
#include "custom_ops/core/types.h"
#include "tensorflow/core/common_runtime/dma_helper.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"

namespace lowbit {

// A core Status as an InvalidArgument prefixed with "<op>: ".
tensorflow::Status ToTf(const char* op, const lowbit::Status& status);

// A tensor's shape for the core's shape checks (core/op_shapes.h).
Shape TfShape(const tensorflow::Tensor& tensor);

// Checks that the "Tout" attribute agrees with the output_type option (int32
// for "bitpacked", float for "float", int8 for "int8").
tensorflow::Status CheckToutAttr(tensorflow::OpKernelConstruction* ctx, const char* op,
                                 OutputType type);

// The int8 quantization attributes of LowbitBconv2d / LowbitBgemm
// (input_zero_point, output_scale, output_zero_point), checked
// (CheckInt8Quantization: a scale that is not finite and > 0, a zero point
// outside [-128, 127] are errors naming the attribute).
struct Int8Attrs {
  std::int32_t input_zero_point = 0;
  Int8Quantization output;
};
tensorflow::Status ReadInt8Attrs(tensorflow::OpKernelConstruction* ctx, const char* op,
                                 Int8Attrs* attrs);

// The input as packed words: an int32 input as it is, a float one (rows of
// `channels` values) bit-packed into `scratch` by the packer of `kernel` (the
// path the op chose when it was made), an int8 one packed by its codes
// against `int8_zero_point` (BitpackInt8Rows).
tensorflow::Status PackedInput(tensorflow::OpKernelContext* ctx, BConv2DKernel kernel,
                               const tensorflow::Tensor& input,
                               std::int64_t rows, std::int64_t channels,
                               tensorflow::Tensor* scratch, const PackedWord** packed,
                               std::int32_t int8_zero_point = 0);

// The compact packed filter: an int32 filter as it is; a float filter is the
// Keras kernel read as a row-major [k, out_channels] matrix (HWIO for the conv,
// k = KH * KW * C; [K, N_out] for the gemm), packed per output channel into
// `scratch` (BitpackColumns: the packing of the transposed kernel).
tensorflow::Status CompactFilter(tensorflow::OpKernelContext* ctx,
                                 const tensorflow::Tensor& filter, std::int64_t k,
                                 std::int64_t out_channels, tensorflow::Tensor* scratch,
                                 const PackedWord** compact);

// The filter re-laid out for one binary kernel, kept across calls. Compute
// may run concurrently, so the cache is swapped under a lock and each call
// holds its own reference. Get reuses it, cheapest check first:
//  1. `filter` (the op's filter input) is the very tensor it was prepared
//     from: the same buffer, dtype and shape. The cache holds a reference to
//     that tensor, so its buffer can be neither freed (and its address reused)
//     nor updated in place: TensorFlow's resource-variable updates copy a
//     buffer that has other references before writing (copy-on-write), which
//     gives the variable a new buffer and this check a miss. A constant filter
//     (a frozen model, a captured tf.constant) is then not read at all: a 2 MB
//     dense filter would otherwise be compared on every call. (Legacy TF1
//     reference variables, tf.compat.v1 with use_resource=False, do assign in
//     place; a filter fed straight from one and assigned between calls is
//     not detected. TF2 and Keras create resource variables only.)
//     Only a buffer TensorFlow allocated qualifies: a tensor that wraps memory
//     TF does not own (a NumPy array eager wraps without copying, a DLPack
//     import) can be written by its owner in place behind TF's back, keeping
//     the pointer, dtype and shape; TensorBuffer::OwnsMemory() is false for
//     those, and they always take step 2.
//  2. Else `compact(&words)` is called for the compact packed filter (packing a
//     float filter) and its words are compared with those the cache was
//     prepared from (a memcmp of 1 bit per weight: far cheaper than preparing
//     again, which the SIMD layouts would cost on every call).
//  3. Else the filter is prepared anew.
class PreparedFilterCache {
 public:
  explicit PreparedFilterCache(BConv2DKernel kernel) : kernel_(kernel) {}

  template <class Compact>
  tensorflow::Status Get(const BConv2DParams& params, const tensorflow::Tensor& filter,
                         Compact&& compact, std::shared_ptr<const BConv2DFilter>* prepared) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (prepared_ != nullptr && prepared_->Matches(kernel_, params) && IsHeld(filter)) {
      *prepared = prepared_;
      return tensorflow::Status();
    }
    const PackedWord* words = nullptr;
    TF_RETURN_IF_ERROR(compact(&words));
    if (prepared_ == nullptr || !prepared_->SameSource(kernel_, params, words)) {
      auto fresh = std::make_shared<BConv2DFilter>();
      fresh->Prepare(kernel_, params, words);
      prepared_ = std::move(fresh);
    }
    held_ = filter;
    *prepared = prepared_;
    return tensorflow::Status();
  }

 private:
  bool IsHeld(const tensorflow::Tensor& filter) const {
    return held_.IsInitialized() && held_.NumElements() > 0 &&
           held_.dtype() == filter.dtype() && held_.shape() == filter.shape() &&
           held_.tensor_data().data() == filter.tensor_data().data() &&
           TensorFlowOwnsBuffer(filter);
  }

  static bool TensorFlowOwnsBuffer(const tensorflow::Tensor& tensor) {
    const tensorflow::TensorBuffer* buffer = tensorflow::DMAHelper::buffer(&tensor);
    if (buffer == nullptr) return false;
    // A slice's buffer defers to the buffer it was cut from; root_buffer() is
    // not const in TF's API, though it only reads.
    return buffer->OwnsMemory() &&
           const_cast<tensorflow::TensorBuffer*>(buffer)->root_buffer()->OwnsMemory();
  }

  const BConv2DKernel kernel_;
  std::mutex mutex_;
  std::shared_ptr<const BConv2DFilter> prepared_;  // guarded by mutex_
  tensorflow::Tensor held_;  // the filter input prepared_ was built from; guarded by mutex_
};

// The integer thresholds and flips of a bit-packed output
// (ComputeBConv2DThresholds: the conv's own params, the depthwise conv's
// PerChannelConvParams, the gemm's AsConv2D view), kept across calls: their
// O(channels * log K) float evaluations cost as much as a small layer's whole
// convolution (14x14x256 depthwise, stride 2), and copying them per call was
// two allocations. Reused while K = kernel_h * kernel_w * channels_in, the
// channel count, the activation and the multiplier and bias values (constants
// in a lowered model: a memcmp of 2 * C floats) are those it was computed
// from. Compute may run concurrently: the entry is swapped under a lock and
// each call holds its own reference to an immutable one.
class ThresholdCache {
 public:
  struct Entry {
    std::int64_t k = 0;
    std::int64_t channels = 0;
    Activation activation = Activation::kNone;
    std::vector<float> multiplier_bias;  // the multiplier, then the bias
    std::vector<std::int32_t> threshold;
    std::vector<std::uint8_t> flip;
  };

  // The entry for `params` and these multiplier and bias values
  // (params.out_channels each). Fails (naming the channel) on a non-finite
  // multiplier or bias.
  Status Get(const BConv2DParams& params, const float* multiplier, const float* bias,
             std::shared_ptr<const Entry>* entry);

 private:
  std::mutex mutex_;
  std::shared_ptr<const Entry> last_;
};

}  // namespace lowbit

#endif  // LOWBIT_TF_BINARY_KERNEL_UTIL_H_
