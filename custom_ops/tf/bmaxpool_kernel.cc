// TF kernel of LowbitBMaxPool2d: max-pooling of bit-packed +-1 values. Inputs
// of rank > 4, [..., H, W, words], have their leading dimensions flattened
// into the batch.

#include "custom_ops/core/bconv2d.h"
#include "custom_ops/core/bmaxpool.h"
#include "custom_ops/core/op_options.h"
#include "custom_ops/core/op_shapes.h"
#include "custom_ops/tf/attr_source.h"
#include "custom_ops/tf/binary_kernel_util.h"
#include "custom_ops/tf/tf_executor.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"

namespace lowbit {

using tensorflow::errors::InvalidArgument;

constexpr char kOp[] = "LowbitBMaxPool2d";

class BMaxPool2DOp : public tensorflow::OpKernel {
 public:
  explicit BMaxPool2DOp(tensorflow::OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ToTf(kOp, ReadBMaxPool2DOptions(TfAttrSource(ctx), &params_)));
  }

  void Compute(tensorflow::OpKernelContext* ctx) override {
    const tensorflow::Tensor& input = ctx->input(0);
    BMaxPool2DParams p = params_;
    Shape out;
    OP_REQUIRES_OK(ctx, ToTf(kOp, CheckBMaxPool2DShapes(TfShape(input), &p, &out)));
    tensorflow::TensorShape out_shape;
    OP_REQUIRES_OK(ctx, tensorflow::TensorShape::BuildTensorShape(out.dims, &out_shape));
    tensorflow::Tensor* output = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, out_shape, &output));
    if (output->NumElements() == 0) return;
    TfExecutor executor(ctx);
    BMaxPool2D(p, reinterpret_cast<const PackedWord*>(input.flat<std::int32_t>().data()),
               reinterpret_cast<PackedWord*>(output->flat<std::int32_t>().data()), executor);
  }

 private:
  BMaxPool2DParams params_;
};

REGISTER_KERNEL_BUILDER(Name("LowbitBMaxPool2d").Device(tensorflow::DEVICE_CPU), BMaxPool2DOp);

}  // namespace lowbit
