// TF kernel of LowbitFastfood: the Adaptive Fastfood transform (core/fastfood.h).
#include <string>

#include "custom_ops/core/bconv2d.h"
#include "custom_ops/core/fastfood.h"
#include "custom_ops/tf/tf_executor.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"

namespace lowbit {

using tensorflow::errors::InvalidArgument;

class FastfoodOp : public tensorflow::OpKernel {
 public:
  explicit FastfoodOp(tensorflow::OpKernelConstruction* ctx) : OpKernel(ctx) {
    std::string activation;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("units", &units_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("activation", &activation));
    OP_REQUIRES_OK(ctx, ToTf(ParseActivation(activation, &activation_)));
  }

  void Compute(tensorflow::OpKernelContext* ctx) override {
    IeeeSubnormals ieee;  // the TFLite shell's float arithmetic (tf_executor.h)
    const tensorflow::Tensor& x = ctx->input(0);
    const tensorflow::Tensor& permutation = ctx->input(4);
    const tensorflow::Tensor& bias = ctx->input(5);
    OP_REQUIRES(ctx, x.dims() >= 1,
                InvalidArgument("LowbitFastfood: x must have rank >= 1, got a scalar"));
    const char* names[4] = {"b", "g", "s", "permutation"};
    const tensorflow::TensorShape& diagonal = ctx->input(1).shape();
    OP_REQUIRES(ctx, diagonal.dims() == 2,
                InvalidArgument("LowbitFastfood: b must be 2-D [k, n], got shape ",
                                diagonal.DebugString()));
    for (int i = 2; i <= 4; ++i) {
      OP_REQUIRES(ctx, ctx->input(i).shape() == diagonal,
                  InvalidArgument("LowbitFastfood: ", names[i - 1], " has shape ",
                                  ctx->input(i).shape().DebugString(),
                                  ", expected the shape of b ", diagonal.DebugString()));
    }
    OP_REQUIRES(ctx, bias.dims() == 1 && (bias.dim_size(0) == 0 || bias.dim_size(0) == units_),
                InvalidArgument("LowbitFastfood: bias must be [units] = [", units_,
                                "] or [0] (no bias), got shape ", bias.shape().DebugString()));

    FastfoodParams p;
    p.input_dim = x.dim_size(x.dims() - 1);
    p.rows = 1;
    for (int i = 0; i + 1 < x.dims(); ++i) p.rows *= x.dim_size(i);
    p.blocks = diagonal.dim_size(0);
    p.block_size = diagonal.dim_size(1);
    p.units = units_;
    p.activation = activation_;
    OP_REQUIRES_OK(ctx, ToTf(CheckFastfoodParams(p)));
    const std::int32_t* perm = permutation.flat<std::int32_t>().data();
    OP_REQUIRES_OK(ctx, ToTf(CheckFastfoodPermutation(p, perm)));

    tensorflow::TensorShape out_shape = x.shape();
    out_shape.set_dim(x.dims() - 1, units_);
    tensorflow::Tensor* output = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, out_shape, &output));
    if (p.rows == 0) return;
    TfExecutor executor(ctx);
    Fastfood(p, x.flat<float>().data(), ctx->input(1).flat<float>().data(),
             ctx->input(2).flat<float>().data(), ctx->input(3).flat<float>().data(), perm,
             bias.dim_size(0) > 0 ? bias.flat<float>().data() : nullptr,
             output->flat<float>().data(), executor);
  }

 private:
  static tensorflow::Status ToTf(const lowbit::Status& s) {
    if (s.ok) return tensorflow::Status();
    return InvalidArgument("LowbitFastfood: ", s.message);
  }

  std::int64_t units_ = 0;
  Activation activation_ = Activation::kNone;
};

REGISTER_KERNEL_BUILDER(Name("LowbitFastfood").Device(tensorflow::DEVICE_CPU), FastfoodOp);

}  // namespace lowbit
