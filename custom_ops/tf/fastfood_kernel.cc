// TF kernel of LowbitFastfood: the Adaptive Fastfood transform (core/fastfood.h).

#include "custom_ops/core/bconv2d.h"
#include "custom_ops/core/fastfood.h"
#include "custom_ops/core/op_options.h"
#include "custom_ops/core/op_shapes.h"
#include "custom_ops/tf/attr_source.h"
#include "custom_ops/tf/binary_kernel_util.h"  // TfShape
#include "custom_ops/tf/tf_executor.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"

namespace lowbit {

using tensorflow::errors::InvalidArgument;

class FastfoodOp : public tensorflow::OpKernel {
 public:
  explicit FastfoodOp(tensorflow::OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ToTf(ReadFastfoodOptions(TfAttrSource(ctx), &units_, &activation_)));
  }

  void Compute(tensorflow::OpKernelContext* ctx) override {
    IeeeSubnormals ieee;  // the TFLite shell's float arithmetic (tf_executor.h)
    const tensorflow::Tensor& x = ctx->input(0);
    const tensorflow::Tensor& permutation = ctx->input(4);
    const tensorflow::Tensor& bias = ctx->input(5);
    FastfoodParams p;
    p.units = units_;
    p.activation = activation_;
    Shape out;
    OP_REQUIRES_OK(ctx, ToTf(CheckFastfoodShapes(
                            TfShape(x), TfShape(ctx->input(1)), TfShape(ctx->input(2)),
                            TfShape(ctx->input(3)), TfShape(permutation), TfShape(bias), &p,
                            &out)));
    const std::int32_t* perm = permutation.flat<std::int32_t>().data();
    OP_REQUIRES_OK(ctx, ToTf(CheckFastfoodPermutation(p, perm)));

    tensorflow::TensorShape out_shape;
    OP_REQUIRES_OK(ctx, tensorflow::TensorShape::BuildTensorShape(out.dims, &out_shape));
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
