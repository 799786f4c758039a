// TF kernel of LowbitBDepthwiseConv2d: validates the tensors against the
// attributes, packs a float input on the fly, flattens the leading dimensions
// of a [..., H, W, C] input into the batch, and runs the core's binary
// depthwise convolution.
#include <string>
#include <type_traits>
#include <vector>

#include "custom_ops/core/bconv2d_bitpacked.h"
#include "custom_ops/core/bdepthwise.h"
#include "custom_ops/core/bitpack.h"
#include "custom_ops/tf/binary_kernel_util.h"
#include "custom_ops/tf/conv_attrs.h"
#include "custom_ops/tf/tf_executor.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"

namespace lowbit {

using tensorflow::errors::InvalidArgument;

constexpr char kDepthwiseOp[] = "LowbitBDepthwiseConv2d";

template <typename T>
class BDepthwiseConv2DOp : public tensorflow::OpKernel {
 public:
  explicit BDepthwiseConv2DOp(tensorflow::OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ReadConvAttrs(ctx, kDepthwiseOp, &params_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("depth_multiplier", &params_.depth_multiplier));
    OP_REQUIRES_OK(ctx, GetOutputTypeAttr(ctx, kDepthwiseOp, &output_type_));
    OP_REQUIRES_OK(ctx, ToTf(CheckBDepthwiseConv2DOptions(params_)));
  }

  void Compute(tensorflow::OpKernelContext* ctx) override {
    IeeeSubnormals ieee;  // the TFLite shell's float arithmetic (tf_executor.h)
    const tensorflow::Tensor& input = ctx->input(0);
    const tensorflow::Tensor& filter = ctx->input(1);
    const tensorflow::Tensor& multiplier = ctx->input(2);
    const tensorflow::Tensor& bias = ctx->input(3);
    constexpr bool kPackedInput = std::is_same<T, std::int32_t>::value;
    const std::int64_t out_channels = params_.out_channels();

    OP_REQUIRES(ctx, input.dims() >= 4,
                InvalidArgument("LowbitBDepthwiseConv2d: input must have rank >= 4 "
                                "[..., H, W, C], got shape ", input.shape().DebugString()));
    const int rank = input.dims();
    const std::int64_t expected_depth = kPackedInput ? params_.in_words() : params_.channels_in;
    OP_REQUIRES(ctx, input.dim_size(rank - 1) == expected_depth,
                InvalidArgument("LowbitBDepthwiseConv2d: input depth ", input.dim_size(rank - 1),
                                kPackedInput ? " (packed words)" : " (channels)",
                                " does not match channels_in = ", params_.channels_in,
                                ", expected ", expected_depth));
    OP_REQUIRES(ctx,
                filter.dims() == 3 && filter.dim_size(0) == params_.kernel_h &&
                    filter.dim_size(1) == params_.kernel_w &&
                    filter.dim_size(2) == params_.out_words(),
                InvalidArgument("LowbitBDepthwiseConv2d: filter must have shape [",
                                params_.kernel_h, ", ", params_.kernel_w, ", ",
                                params_.out_words(), "] (kernel_h, kernel_w, packed words of ",
                                "channels_in * depth_multiplier = ", out_channels, "), got ",
                                filter.shape().DebugString()));
    OP_REQUIRES(ctx, multiplier.dims() == 1 && multiplier.dim_size(0) == out_channels,
                InvalidArgument("LowbitBDepthwiseConv2d: multiplier must have shape [",
                                out_channels, "], got ", multiplier.shape().DebugString()));
    OP_REQUIRES(ctx, bias.dims() == 1 && bias.dim_size(0) == out_channels,
                InvalidArgument("LowbitBDepthwiseConv2d: bias must have shape [", out_channels,
                                "], got ", bias.shape().DebugString()));

    BDepthwiseConv2DParams p = params_;
    p.batch = 1;
    for (int i = 0; i < rank - 3; ++i) p.batch *= input.dim_size(i);  // <= the element count
    p.in_h = input.dim_size(rank - 3);
    p.in_w = input.dim_size(rank - 2);
    OP_REQUIRES_OK(ctx, ToTf(ComputeBDepthwiseConv2DGeometry(&p)));

    const bool bitpacked = output_type_ == OutputType::kBitpacked;
    std::vector<std::int32_t> threshold;
    std::vector<std::uint8_t> flip;
    if (bitpacked) {
      threshold.resize(static_cast<std::size_t>(out_channels));
      flip.resize(static_cast<std::size_t>(out_channels));
      OP_REQUIRES_OK(ctx, ToTf(ComputeBDepthwiseThresholds(p, multiplier.flat<float>().data(),
                                                           bias.flat<float>().data(),
                                                           threshold.data(), flip.data())));
    }
    tensorflow::TensorShape out_shape;
    for (int i = 0; i < rank - 3; ++i) {
      OP_REQUIRES_OK(ctx, out_shape.AddDimWithStatus(input.dim_size(i)));
    }
    OP_REQUIRES_OK(ctx, out_shape.AddDimWithStatus(p.out_h));
    OP_REQUIRES_OK(ctx, out_shape.AddDimWithStatus(p.out_w));
    OP_REQUIRES_OK(ctx, out_shape.AddDimWithStatus(bitpacked ? p.out_words() : out_channels));
    tensorflow::Tensor* output = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, out_shape, &output));
    if (output->NumElements() == 0) return;

    TfExecutor executor(ctx);
    const PackedWord* packed_input;
    tensorflow::Tensor packed;  // scratch for a float input
    if constexpr (kPackedInput) {
      packed_input = reinterpret_cast<const PackedWord*>(input.flat<std::int32_t>().data());
    } else {
      OP_REQUIRES_OK(ctx, ctx->allocate_temp(
                              tensorflow::DT_INT32,
                              tensorflow::TensorShape({p.batch, p.in_h, p.in_w, p.in_words()}),
                              &packed));
      PackedWord* dst = reinterpret_cast<PackedWord*>(packed.flat<std::int32_t>().data());
      BitpackRows(input.flat<float>().data(), p.batch * p.in_h * p.in_w, p.channels_in, dst,
                  executor);
      packed_input = dst;
    }
    const PackedWord* packed_filter =
        reinterpret_cast<const PackedWord*>(filter.flat<std::int32_t>().data());
    if (bitpacked) {
      BDepthwiseConv2DBitpacked(p, packed_input, packed_filter, threshold.data(), flip.data(),
                                reinterpret_cast<PackedWord*>(output->flat<std::int32_t>().data()),
                                executor);
      return;
    }
    BDepthwiseConv2D(p, packed_input, packed_filter, multiplier.flat<float>().data(),
                     bias.flat<float>().data(), output->flat<float>().data(), executor);
  }

 private:
  static tensorflow::Status ToTf(const lowbit::Status& s) {
    return lowbit::ToTf(kDepthwiseOp, s);
  }

  BDepthwiseConv2DParams params_;
  OutputType output_type_ = OutputType::kFloat;
};

REGISTER_KERNEL_BUILDER(
    Name("LowbitBDepthwiseConv2d").Device(tensorflow::DEVICE_CPU).TypeConstraint<float>("T"),
    BDepthwiseConv2DOp<float>);
REGISTER_KERNEL_BUILDER(
    Name("LowbitBDepthwiseConv2d").Device(tensorflow::DEVICE_CPU).TypeConstraint<std::int32_t>("T"),
    BDepthwiseConv2DOp<std::int32_t>);

}  // namespace lowbit
