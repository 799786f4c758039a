// TF kernel of LowbitBconv2d: validates the tensors against the attributes,
// packs a float input on the fly, and runs the core's binary convolution.
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "custom_ops/core/bconv2d.h"
#include "custom_ops/core/bconv2d_bitpacked.h"
#include "custom_ops/core/bitpack.h"
#include "custom_ops/tf/tf_executor.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"

namespace lowbit {

using tensorflow::errors::InvalidArgument;

template <typename T>
class BConv2DOp : public tensorflow::OpKernel {
 public:
  explicit BConv2DOp(tensorflow::OpKernelConstruction* ctx) : OpKernel(ctx) {
    std::string padding, activation;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("channels_in", &params_.channels_in));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("kernel_h", &params_.kernel_h));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("kernel_w", &params_.kernel_w));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("stride_h", &params_.stride_h));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("stride_w", &params_.stride_w));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("dilation_h", &params_.dilation_h));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("dilation_w", &params_.dilation_w));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("pad_value", &params_.pad_value));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("padding", &padding));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("activation", &activation));
    OP_REQUIRES_OK(ctx, ToTf(ParsePadding(padding, &params_.padding)));
    OP_REQUIRES_OK(ctx, ToTf(ParseActivation(activation, &params_.activation)));
    OP_REQUIRES_OK(ctx, ToTf(CheckBConv2DOptions(params_)));
    std::string output_type;
    tensorflow::DataType tout;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("output_type", &output_type));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("Tout", &tout));
    OP_REQUIRES_OK(ctx, ToTf(ParseOutputType(output_type, &output_type_)));
    const tensorflow::DataType want =
        output_type_ == OutputType::kBitpacked ? tensorflow::DT_INT32 : tensorflow::DT_FLOAT;
    OP_REQUIRES(ctx, tout == want,
                InvalidArgument("LowbitBconv2d: output_type \"", output_type,
                                "\" needs Tout = ", tensorflow::DataTypeString(want), ", got ",
                                tensorflow::DataTypeString(tout)));
    kernel_ = SelectBConv2DKernel();
  }

  void Compute(tensorflow::OpKernelContext* ctx) override {
    const tensorflow::Tensor& input = ctx->input(0);
    const tensorflow::Tensor& filter = ctx->input(1);
    const tensorflow::Tensor& multiplier = ctx->input(2);
    const tensorflow::Tensor& bias = ctx->input(3);
    constexpr bool kPackedInput = std::is_same<T, std::int32_t>::value;
    const std::int64_t words = params_.words();

    OP_REQUIRES(ctx, input.dims() == 4,
                InvalidArgument("LowbitBconv2d: input must be 4-D NHWC, got shape ",
                                input.shape().DebugString()));
    OP_REQUIRES(ctx, filter.dims() == 2,
                InvalidArgument("LowbitBconv2d: filter must be 2-D [C_out, words], got shape ",
                                filter.shape().DebugString()));
    const std::int64_t expected_depth = kPackedInput ? words : params_.channels_in;
    OP_REQUIRES(ctx, input.dim_size(3) == expected_depth,
                InvalidArgument("LowbitBconv2d: input depth ", input.dim_size(3),
                                kPackedInput ? " (packed words)" : " (channels)",
                                " does not match channels_in = ", params_.channels_in,
                                ", expected ", expected_depth));
    const std::int64_t filter_words =
        CompactFilterWords(params_.kernel_h, params_.kernel_w, params_.channels_in);
    OP_REQUIRES(ctx, filter.dim_size(1) == filter_words,
                InvalidArgument("LowbitBconv2d: filter has ", filter.dim_size(1),
                                " packed words per output channel, but kernel ", params_.kernel_h,
                                "x", params_.kernel_w, " with channels_in = ",
                                params_.channels_in, " needs ", filter_words));
    const std::int64_t out_channels = filter.dim_size(0);
    OP_REQUIRES(ctx, multiplier.dims() == 1 && multiplier.dim_size(0) == out_channels,
                InvalidArgument("LowbitBconv2d: multiplier must have shape [", out_channels,
                                "], got ", multiplier.shape().DebugString()));
    OP_REQUIRES(ctx, bias.dims() == 1 && bias.dim_size(0) == out_channels,
                InvalidArgument("LowbitBconv2d: bias must have shape [", out_channels, "], got ",
                                bias.shape().DebugString()));

    BConv2DParams p = params_;
    p.batch = input.dim_size(0);
    p.in_h = input.dim_size(1);
    p.in_w = input.dim_size(2);
    p.out_channels = out_channels;
    OP_REQUIRES_OK(ctx, ToTf(ComputeBConv2DGeometry(&p)));

    const bool bitpacked = output_type_ == OutputType::kBitpacked;
    std::vector<std::int32_t> threshold;
    std::vector<std::uint8_t> flip;
    if (bitpacked) {
      threshold.resize(static_cast<std::size_t>(out_channels));
      flip.resize(static_cast<std::size_t>(out_channels));
      OP_REQUIRES_OK(ctx, ToTf(ComputeBConv2DThresholds(p, multiplier.flat<float>().data(),
                                                        bias.flat<float>().data(),
                                                        threshold.data(), flip.data())));
    }
    tensorflow::Tensor* output = nullptr;
    const std::int64_t out_depth = bitpacked ? PackedWords(out_channels) : out_channels;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(
                            0, tensorflow::TensorShape({p.batch, p.out_h, p.out_w, out_depth}),
                            &output));
    if (output->NumElements() == 0) return;

    TfExecutor executor(ctx);
    const PackedWord* packed_input;
    tensorflow::Tensor packed;  // scratch for a float input
    if constexpr (kPackedInput) {
      packed_input = reinterpret_cast<const PackedWord*>(input.flat<std::int32_t>().data());
    } else {
      OP_REQUIRES_OK(ctx, ctx->allocate_temp(tensorflow::DT_INT32,
                                             tensorflow::TensorShape({p.batch, p.in_h, p.in_w, words}),
                                             &packed));
      PackedWord* dst = reinterpret_cast<PackedWord*>(packed.flat<std::int32_t>().data());
      BitpackRows(input.flat<float>().data(), p.batch * p.in_h * p.in_w, p.channels_in, dst,
                  executor);
      packed_input = dst;
    }
    const std::shared_ptr<const BConv2DFilter> prepared = PreparedFilter(
        p, reinterpret_cast<const PackedWord*>(filter.flat<std::int32_t>().data()));
    if (bitpacked) {
      BConv2DBitpacked(p, packed_input, *prepared, threshold.data(), flip.data(),
                       reinterpret_cast<PackedWord*>(output->flat<std::int32_t>().data()),
                       executor);
      return;
    }
    BConv2D(p, packed_input, *prepared, multiplier.flat<float>().data(),
            bias.flat<float>().data(), output->flat<float>().data(), executor);
  }

 private:
  static tensorflow::Status ToTf(const lowbit::Status& s) {
    if (s.ok) return tensorflow::Status();
    return InvalidArgument("LowbitBconv2d: ", s.message);
  }

  // The filter re-laid out for kernel_, kept while the filter input keeps the
  // same words (checked by a memcmp of the compact filter, 1 bit per weight:
  // far cheaper than preparing it again, which the SIMD layouts would cost on
  // every call). Compute may run concurrently, so the cache is swapped under a
  // lock and each call holds its own reference.
  std::shared_ptr<const BConv2DFilter> PreparedFilter(const BConv2DParams& p,
                                                      const PackedWord* compact) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (prepared_ == nullptr || !prepared_->SameSource(kernel_, p, compact)) {
      auto fresh = std::make_shared<BConv2DFilter>();
      fresh->Prepare(kernel_, p, compact);
      prepared_ = std::move(fresh);
    }
    return prepared_;
  }

  BConv2DParams params_;
  OutputType output_type_ = OutputType::kFloat;
  BConv2DKernel kernel_;
  std::mutex mutex_;
  std::shared_ptr<const BConv2DFilter> prepared_;  // guarded by mutex_
};

REGISTER_KERNEL_BUILDER(
    Name("LowbitBconv2d").Device(tensorflow::DEVICE_CPU).TypeConstraint<float>("T"),
    BConv2DOp<float>);
REGISTER_KERNEL_BUILDER(
    Name("LowbitBconv2d").Device(tensorflow::DEVICE_CPU).TypeConstraint<std::int32_t>("T"),
    BConv2DOp<std::int32_t>);

}  // namespace lowbit
