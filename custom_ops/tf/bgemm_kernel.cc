// TF kernel of LowbitBgemm: a binary dense layer over the last axis of an
// input of any rank >= 1, [..., K] -> [..., N_out]; the leading dimensions
// are rows. Packs a float input (and a float [K, N_out] kernel) on the fly
// and runs the core's BGemm (a 1x1 binary convolution over the rows).
#include <memory>
#include <string>
#include <vector>

#include "custom_ops/core/bgemm.h"
#include "custom_ops/tf/binary_kernel_util.h"
#include "custom_ops/tf/tf_executor.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"

namespace lowbit {

using tensorflow::errors::InvalidArgument;

constexpr char kOp[] = "LowbitBgemm";

class BGemmOp : public tensorflow::OpKernel {
 public:
  explicit BGemmOp(tensorflow::OpKernelConstruction* ctx)
      : OpKernel(ctx), filters_(SelectBConv2DKernel()) {
    std::string activation;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("channels_in", &params_.channels_in));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("activation", &activation));
    OP_REQUIRES_OK(ctx, ToTf(kOp, ParseActivation(activation, &params_.activation)));
    OP_REQUIRES_OK(ctx, ToTf(kOp, CheckBGemmOptions(params_)));
    OP_REQUIRES_OK(ctx, GetOutputTypeAttr(ctx, kOp, &output_type_));
  }

  void Compute(tensorflow::OpKernelContext* ctx) override {
    IeeeSubnormals ieee;  // the TFLite shell's float arithmetic (tf_executor.h)
    const tensorflow::Tensor& input = ctx->input(0);
    const tensorflow::Tensor& filter = ctx->input(1);
    const tensorflow::Tensor& multiplier = ctx->input(2);
    const tensorflow::Tensor& bias = ctx->input(3);
    const bool packed_input = input.dtype() == tensorflow::DT_INT32;
    const std::int64_t channels = params_.channels_in;
    const std::int64_t words = params_.words();

    const int rank = input.dims();
    OP_REQUIRES(ctx, rank >= 1,
                InvalidArgument(kOp, ": input must have rank >= 1 [..., K], got a scalar"));
    const std::int64_t expected_depth = packed_input ? words : channels;
    OP_REQUIRES(ctx, input.dim_size(rank - 1) == expected_depth,
                InvalidArgument(kOp, ": input depth ", input.dim_size(rank - 1),
                                packed_input ? " (packed words)" : " (channels)",
                                " does not match channels_in = ", channels, ", expected ",
                                expected_depth));
    std::int64_t out_channels = 0;
    if (filter.dtype() == tensorflow::DT_FLOAT) {
      // The Keras kernel [K, N_out]; packed here (training through the fast path).
      OP_REQUIRES(ctx, filter.dims() == 2 && filter.dim_size(0) == channels,
                  InvalidArgument(kOp, ": a float filter must be the Keras kernel [", channels,
                                  ", N_out], got shape ", filter.shape().DebugString()));
      out_channels = filter.dim_size(1);
    } else {
      OP_REQUIRES(ctx, filter.dims() == 2 && filter.dim_size(1) == words,
                  InvalidArgument(kOp, ": filter must be [N_out, ", words,
                                  "] (ceil(channels_in / 32) packed words per output channel, "
                                  "channels_in = ", channels, "), got shape ",
                                  filter.shape().DebugString()));
      out_channels = filter.dim_size(0);
    }
    OP_REQUIRES(ctx, multiplier.dims() == 1 && multiplier.dim_size(0) == out_channels,
                InvalidArgument(kOp, ": multiplier must have shape [", out_channels, "], got ",
                                multiplier.shape().DebugString()));
    OP_REQUIRES(ctx, bias.dims() == 1 && bias.dim_size(0) == out_channels,
                InvalidArgument(kOp, ": bias must have shape [", out_channels, "], got ",
                                bias.shape().DebugString()));

    BGemmParams p = params_;
    p.out_channels = out_channels;
    OP_REQUIRES(ctx, FlattenDims(input.shape().dim_sizes().data(), rank - 1, &p.rows),
                InvalidArgument(kOp, ": too many rows in input ", input.shape().DebugString()));
    OP_REQUIRES_OK(ctx, ToTf(kOp, CheckBGemmShape(p)));

    const bool bitpacked = output_type_ == OutputType::kBitpacked;
    std::vector<std::int32_t> threshold;
    std::vector<std::uint8_t> flip;
    if (bitpacked) {
      threshold.resize(static_cast<std::size_t>(out_channels));
      flip.resize(static_cast<std::size_t>(out_channels));
      OP_REQUIRES_OK(ctx, ToTf(kOp, ComputeBGemmThresholds(p, multiplier.flat<float>().data(),
                                                           bias.flat<float>().data(),
                                                           threshold.data(), flip.data())));
    }
    tensorflow::TensorShape out_shape = input.shape();
    out_shape.set_dim(rank - 1, bitpacked ? PackedWords(out_channels) : out_channels);
    tensorflow::Tensor* output = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, out_shape, &output));
    if (output->NumElements() == 0) return;

    tensorflow::Tensor packed_scratch, filter_scratch;
    const PackedWord* packed = nullptr;
    OP_REQUIRES_OK(ctx, PackedInput(ctx, input, p.rows, channels, &packed_scratch, &packed));
    std::shared_ptr<const BConv2DFilter> prepared;
    OP_REQUIRES_OK(ctx, filters_.Get(
                            p.AsConv2D(), filter,
                            [&](const PackedWord** compact) {
                              return CompactFilter(ctx, filter, channels, out_channels,
                                                   &filter_scratch, compact);
                            },
                            &prepared));
    TfExecutor executor(ctx);
    if (bitpacked) {
      BGemmBitpacked(p, packed, *prepared, threshold.data(), flip.data(),
                     reinterpret_cast<PackedWord*>(output->flat<std::int32_t>().data()),
                     executor);
      return;
    }
    BGemm(p, packed, *prepared, multiplier.flat<float>().data(), bias.flat<float>().data(),
          output->flat<float>().data(), executor);
  }

 private:
  BGemmParams params_;
  OutputType output_type_ = OutputType::kFloat;
  PreparedFilterCache filters_;
};

// One kernel for every input / filter dtype the op allows.
REGISTER_KERNEL_BUILDER(Name("LowbitBgemm").Device(tensorflow::DEVICE_CPU), BGemmOp);

}  // namespace lowbit
