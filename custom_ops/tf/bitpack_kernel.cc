// TF kernel of LowbitBitpack: a thin shell over core/bitpack.
#include "custom_ops/core/bitpack.h"
#include "custom_ops/tf/tf_executor.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"

namespace lowbit {

class BitpackOp : public tensorflow::OpKernel {
 public:
  explicit BitpackOp(tensorflow::OpKernelConstruction* ctx)
      : OpKernel(ctx), kernel_(SelectBConv2DKernel()) {}

  void Compute(tensorflow::OpKernelContext* ctx) override {
    const tensorflow::Tensor& input = ctx->input(0);
    OP_REQUIRES(ctx, input.dims() >= 1,
                tensorflow::errors::InvalidArgument(
                    "LowbitBitpack: input must have rank >= 1, got shape ",
                    input.shape().DebugString()));
    const std::int64_t channels = input.dim_size(input.dims() - 1);
    tensorflow::TensorShape out_shape = input.shape();
    out_shape.set_dim(input.dims() - 1, PackedWords(channels));
    tensorflow::Tensor* output = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, out_shape, &output));
    if (input.NumElements() == 0) return;
    TfExecutor executor(ctx);
    BitpackRows(kernel_, input.flat<float>().data(), input.NumElements() / channels, channels,
                reinterpret_cast<PackedWord*>(output->flat<std::int32_t>().data()), executor);
  }

 private:
  const BConv2DKernel kernel_;  // chosen when the op was made (core/bitpack.h)
};

REGISTER_KERNEL_BUILDER(Name("LowbitBitpack").Device(tensorflow::DEVICE_CPU), BitpackOp);

}  // namespace lowbit
