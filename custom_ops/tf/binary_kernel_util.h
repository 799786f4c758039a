// What the TF kernels of LowbitBconv2d and LowbitBgemm share: the output
// attributes, packing a float input or a float (Keras) kernel on the fly, and
// the cache of the filter laid out for the chosen binary kernel.
#ifndef LOWBIT_TF_BINARY_KERNEL_UTIL_H_
#define LOWBIT_TF_BINARY_KERNEL_UTIL_H_

#include <cstdint>
#include <memory>
#include <mutex>

#include "custom_ops/core/bconv2d.h"
#include "custom_ops/core/bconv2d_bitpacked.h"
#include "custom_ops/core/types.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"

namespace lowbit {

// A core Status as an InvalidArgument prefixed with "<op>: ".
tensorflow::Status ToTf(const char* op, const lowbit::Status& status);

// Reads "output_type" and checks that "Tout" agrees with it (int32 for
// "bitpacked", float for "float").
tensorflow::Status GetOutputTypeAttr(tensorflow::OpKernelConstruction* ctx, const char* op,
                                     OutputType* type);

// The input as packed words: an int32 input as it is, a float one (rows of
// `channels` values) bit-packed into `scratch`.
tensorflow::Status PackedInput(tensorflow::OpKernelContext* ctx, const tensorflow::Tensor& input,
                               std::int64_t rows, std::int64_t channels,
                               tensorflow::Tensor* scratch, const PackedWord** packed);

// The compact packed filter: an int32 filter as it is; a float filter is the
// Keras kernel read as a row-major [k, out_channels] matrix (HWIO for the conv,
// k = KH * KW * C; [K, N_out] for the gemm), packed per output channel into
// `scratch` (BitpackColumns: the packing of the transposed kernel).
tensorflow::Status CompactFilter(tensorflow::OpKernelContext* ctx,
                                 const tensorflow::Tensor& filter, std::int64_t k,
                                 std::int64_t out_channels, tensorflow::Tensor* scratch,
                                 const PackedWord** compact);

// The filter re-laid out for one binary kernel, kept while the compact filter
// keeps the same words (a memcmp of 1 bit per weight: far cheaper than
// preparing it again, which the SIMD layouts would cost on every call).
// Compute may run concurrently, so the cache is swapped under a lock and each
// call holds its own reference.
class PreparedFilterCache {
 public:
  explicit PreparedFilterCache(BConv2DKernel kernel) : kernel_(kernel) {}
  std::shared_ptr<const BConv2DFilter> Get(const BConv2DParams& params,
                                           const PackedWord* compact);

 private:
  const BConv2DKernel kernel_;
  std::mutex mutex_;
  std::shared_ptr<const BConv2DFilter> prepared_;  // guarded by mutex_
};

}  // namespace lowbit

#endif  // LOWBIT_TF_BINARY_KERNEL_UTIL_H_
