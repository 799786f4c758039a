// TF kernel of LowbitMultibitConv2d: multi-bit convolution as P * M binary
// convolutions (core/multibit_conv2d.h).
#include <memory>

#include "custom_ops/core/multibit_conv2d.h"
#include "custom_ops/core/op_options.h"
#include "custom_ops/core/op_shapes.h"
#include "custom_ops/tf/attr_source.h"
#include "custom_ops/tf/binary_kernel_util.h"
#include "custom_ops/tf/tf_executor.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"

namespace lowbit {

using tensorflow::errors::InvalidArgument;

class MultibitConv2DOp : public tensorflow::OpKernel {
 public:
  explicit MultibitConv2DOp(tensorflow::OpKernelConstruction* ctx)
      : OpKernel(ctx), filter_(SelectBConv2DKernel()) {
    OP_REQUIRES_OK(ctx, ToTf(ReadMultibitConv2DOptions(TfAttrSource(ctx), &params_)));
  }

  void Compute(tensorflow::OpKernelContext* ctx) override {
    IeeeSubnormals ieee;  // the TFLite shell's float arithmetic (tf_executor.h)
    const tensorflow::Tensor& input = ctx->input(0);
    const tensorflow::Tensor& filter = ctx->input(1);
    const tensorflow::Tensor& alphas = ctx->input(2);
    const tensorflow::Tensor& shifts = ctx->input(3);
    const tensorflow::Tensor& betas = ctx->input(4);
    const tensorflow::Tensor& bias = ctx->input(5);

    MultibitConv2DParams p = params_;
    Shape out;
    OP_REQUIRES_OK(ctx, ToTf(CheckMultibitConv2DShapes(TfShape(input), TfShape(filter),
                                                       TfShape(alphas), TfShape(shifts),
                                                       TfShape(betas), TfShape(bias), &p, &out)));
    tensorflow::TensorShape out_shape;
    OP_REQUIRES_OK(ctx, tensorflow::TensorShape::BuildTensorShape(out.dims, &out_shape));
    tensorflow::Tensor* output = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, out_shape, &output));
    if (output->NumElements() == 0) return;

    TfExecutor executor(ctx);
    std::shared_ptr<const BConv2DFilter> prepared;
    OP_REQUIRES_OK(ctx, filter_.Get(
                            PlaneConvParams(p), filter,
                            [&](const PackedWord** compact) {
                              *compact = reinterpret_cast<const PackedWord*>(
                                  filter.flat<std::int32_t>().data());
                              return tensorflow::Status();
                            },
                            &prepared));
    MultibitConv2DScratch scratch;
    MultibitConv2D(p, input.flat<float>().data(), shifts.flat<float>().data(), *prepared,
                   alphas.flat<float>().data(), betas.flat<float>().data(),
                   bias.flat<float>().data(), output->flat<float>().data(), &scratch, executor);
  }

 private:
  static tensorflow::Status ToTf(const lowbit::Status& s) {
    return lowbit::ToTf("LowbitMultibitConv2d", s);
  }

  MultibitConv2DParams params_;  // options only
  PreparedFilterCache filter_;
};

REGISTER_KERNEL_BUILDER(Name("LowbitMultibitConv2d").Device(tensorflow::DEVICE_CPU),
                        MultibitConv2DOp);

}  // namespace lowbit
