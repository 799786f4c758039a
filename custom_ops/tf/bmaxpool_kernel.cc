// TF kernel of LowbitBMaxPool2d: max-pooling of bit-packed +-1 values.
#include <string>

#include "custom_ops/core/bconv2d.h"
#include "custom_ops/core/bmaxpool.h"
#include "custom_ops/tf/tf_executor.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"

namespace lowbit {

using tensorflow::errors::InvalidArgument;

class BMaxPool2DOp : public tensorflow::OpKernel {
 public:
  explicit BMaxPool2DOp(tensorflow::OpKernelConstruction* ctx) : OpKernel(ctx) {
    std::string padding;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("channels", &params_.channels));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("filter_h", &params_.filter_h));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("filter_w", &params_.filter_w));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("stride_h", &params_.stride_h));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("stride_w", &params_.stride_w));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("padding", &padding));
    OP_REQUIRES_OK(ctx, ToTf(ParsePadding(padding, &params_.padding)));
    OP_REQUIRES_OK(ctx, ToTf(CheckBMaxPool2DOptions(params_)));
  }

  void Compute(tensorflow::OpKernelContext* ctx) override {
    const tensorflow::Tensor& input = ctx->input(0);
    OP_REQUIRES(ctx, input.dims() == 4,
                InvalidArgument("LowbitBMaxPool2d: input must be 4-D packed NHWC, got shape ",
                                input.shape().DebugString()));
    OP_REQUIRES(ctx, input.dim_size(3) == params_.words(),
                InvalidArgument("LowbitBMaxPool2d: input depth ", input.dim_size(3),
                                " (packed words) does not match channels = ", params_.channels,
                                ", expected ", params_.words()));
    BMaxPool2DParams p = params_;
    p.batch = input.dim_size(0);
    p.in_h = input.dim_size(1);
    p.in_w = input.dim_size(2);
    OP_REQUIRES_OK(ctx, ToTf(ComputeBMaxPool2DGeometry(&p)));
    tensorflow::Tensor* output = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(
                            0, tensorflow::TensorShape({p.batch, p.out_h, p.out_w, p.words()}),
                            &output));
    if (output->NumElements() == 0) return;
    TfExecutor executor(ctx);
    BMaxPool2D(p, reinterpret_cast<const PackedWord*>(input.flat<std::int32_t>().data()),
               reinterpret_cast<PackedWord*>(output->flat<std::int32_t>().data()), executor);
  }

 private:
  static tensorflow::Status ToTf(const lowbit::Status& s) {
    if (s.ok) return tensorflow::Status();
    return InvalidArgument("LowbitBMaxPool2d: ", s.message);
  }

  BMaxPool2DParams params_;
};

REGISTER_KERNEL_BUILDER(Name("LowbitBMaxPool2d").Device(tensorflow::DEVICE_CPU), BMaxPool2DOp);

}  // namespace lowbit
