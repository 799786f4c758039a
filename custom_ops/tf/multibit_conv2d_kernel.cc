// TF kernel of LowbitMultibitConv2d: multi-bit convolution as P * M binary
// convolutions (core/multibit_conv2d.h).
#include <memory>
#include <string>

#include "custom_ops/core/multibit_conv2d.h"
#include "custom_ops/tf/binary_kernel_util.h"
#include "custom_ops/tf/conv_attrs.h"
#include "custom_ops/tf/tf_executor.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"

namespace lowbit {

using tensorflow::errors::InvalidArgument;

class MultibitConv2DOp : public tensorflow::OpKernel {
 public:
  explicit MultibitConv2DOp(tensorflow::OpKernelConstruction* ctx)
      : OpKernel(ctx), filter_(SelectBConv2DKernel()) {
    std::string mode;
    OP_REQUIRES_OK(ctx, ReadConvAttrs(ctx, "LowbitMultibitConv2d", &params_.conv));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("activation_mode", &mode));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("activation_bits", &params_.activation_bits));
    OP_REQUIRES_OK(ctx, ToTf(ParseActivationPlanes(mode, &params_.activation_mode)));
    OP_REQUIRES_OK(ctx, ToTf(CheckBConv2DOptions(params_.conv)));
  }

  void Compute(tensorflow::OpKernelContext* ctx) override {
    IeeeSubnormals ieee;  // the TFLite shell's float arithmetic (tf_executor.h)
    const tensorflow::Tensor& input = ctx->input(0);
    const tensorflow::Tensor& filter = ctx->input(1);
    const tensorflow::Tensor& alphas = ctx->input(2);
    const tensorflow::Tensor& shifts = ctx->input(3);
    const tensorflow::Tensor& betas = ctx->input(4);
    const tensorflow::Tensor& bias = ctx->input(5);

    OP_REQUIRES(ctx, input.dims() >= 4,
                InvalidArgument("LowbitMultibitConv2d: input must have rank >= 4 [..., H, W, C], "
                                "got shape ", input.shape().DebugString()));
    const int rank = input.dims();
    OP_REQUIRES(ctx, input.dim_size(rank - 1) == params_.conv.channels_in,
                InvalidArgument("LowbitMultibitConv2d: input depth ", input.dim_size(rank - 1),
                                " does not match channels_in = ", params_.conv.channels_in));
    OP_REQUIRES(ctx, filter.dims() == 3,
                InvalidArgument("LowbitMultibitConv2d: filter must be 3-D [M, C_out, words], "
                                "got shape ", filter.shape().DebugString()));
    const std::int64_t filter_words = CompactFilterWords(
        params_.conv.kernel_h, params_.conv.kernel_w, params_.conv.channels_in);
    OP_REQUIRES(ctx, filter.dim_size(2) == filter_words,
                InvalidArgument("LowbitMultibitConv2d: filter has ", filter.dim_size(2),
                                " packed words per output channel, but kernel ",
                                params_.conv.kernel_h, "x", params_.conv.kernel_w,
                                " with channels_in = ", params_.conv.channels_in, " needs ",
                                filter_words));
    const std::int64_t planes_m = filter.dim_size(0);
    const std::int64_t cout = filter.dim_size(1);
    OP_REQUIRES(ctx, cout >= 1,
                InvalidArgument("LowbitMultibitConv2d: filter has no output channels: ",
                                filter.shape().DebugString()));
    OP_REQUIRES(ctx, alphas.dims() == 2 && alphas.dim_size(0) == planes_m &&
                         alphas.dim_size(1) == cout,
                InvalidArgument("LowbitMultibitConv2d: alphas must have shape [", planes_m, ", ",
                                cout, "] (weight planes, output channels), got ",
                                alphas.shape().DebugString()));
    OP_REQUIRES(ctx, shifts.dims() == 1,
                InvalidArgument("LowbitMultibitConv2d: shifts must be 1-D, got shape ",
                                shifts.shape().DebugString()));
    OP_REQUIRES(ctx, bias.dims() == 1 && bias.dim_size(0) == cout,
                InvalidArgument("LowbitMultibitConv2d: bias must have shape [", cout, "], got ",
                                bias.shape().DebugString()));

    MultibitConv2DParams p = params_;
    p.weight_planes = planes_m;
    p.num_shifts = shifts.dim_size(0);
    p.conv.batch = 1;
    for (int i = 0; i < rank - 3; ++i) p.conv.batch *= input.dim_size(i);
    p.conv.in_h = input.dim_size(rank - 3);
    p.conv.in_w = input.dim_size(rank - 2);
    p.conv.out_channels = cout;
    OP_REQUIRES_OK(ctx, ToTf(ComputeMultibitConv2DGeometry(&p)));
    OP_REQUIRES(ctx, betas.dims() == 1 && betas.dim_size(0) == p.activation_planes(),
                InvalidArgument("LowbitMultibitConv2d: betas must have shape [",
                                p.activation_planes(), "] (one per activation plane), got ",
                                betas.shape().DebugString()));

    tensorflow::TensorShape out_shape;
    for (int i = 0; i < rank - 3; ++i) {
      OP_REQUIRES_OK(ctx, out_shape.AddDimWithStatus(input.dim_size(i)));
    }
    OP_REQUIRES_OK(ctx, out_shape.AddDimWithStatus(p.conv.out_h));
    OP_REQUIRES_OK(ctx, out_shape.AddDimWithStatus(p.conv.out_w));
    OP_REQUIRES_OK(ctx, out_shape.AddDimWithStatus(cout));
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
