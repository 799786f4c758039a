// TF kernel of LowbitBconv2d: validates the tensors against the attributes,
// packs a float input (and a float HWIO filter) on the fly, and runs the
// core's binary convolution. Inputs of rank > 4, [..., H, W, C], are a batch
// of images whose leading dimensions are flattened into the batch.
#include <memory>
#include <string>
#include <vector>

#include "custom_ops/core/bconv2d.h"
#include "custom_ops/core/bconv2d_bitpacked.h"
#include "custom_ops/tf/binary_kernel_util.h"
#include "custom_ops/tf/conv_attrs.h"
#include "custom_ops/tf/tf_executor.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"

namespace lowbit {

using tensorflow::errors::InvalidArgument;

constexpr char kOp[] = "LowbitBconv2d";

class BConv2DOp : public tensorflow::OpKernel {
 public:
  explicit BConv2DOp(tensorflow::OpKernelConstruction* ctx)
      : OpKernel(ctx), filters_(SelectBConv2DKernel()) {
    OP_REQUIRES_OK(ctx, ReadConvAttrs(ctx, kOp, &params_));
    OP_REQUIRES_OK(ctx, ToTf(kOp, CheckBConv2DOptions(params_)));
    OP_REQUIRES_OK(ctx, GetOutputTypeAttr(ctx, kOp, &output_type_));
    std::string epilogue;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("epilogue", &epilogue));
    OP_REQUIRES_OK(ctx, ToTf(kOp, ParseEpilogue(epilogue, &epilogue_kind_)));
    OP_REQUIRES(ctx, epilogue_kind_.inputs() == 0 || output_type_ == OutputType::kFloat,
                InvalidArgument(kOp, ": epilogue \"", epilogue,
                                "\" needs output_type \"float\""));
  }

  void Compute(tensorflow::OpKernelContext* ctx) override {
    IeeeSubnormals ieee;  // the TFLite shell's float arithmetic (tf_executor.h)
    const tensorflow::Tensor& input = ctx->input(0);
    const tensorflow::Tensor& filter = ctx->input(1);
    const tensorflow::Tensor& multiplier = ctx->input(2);
    const tensorflow::Tensor& bias = ctx->input(3);
    const bool packed_input = input.dtype() == tensorflow::DT_INT32;
    const bool float_filter = filter.dtype() == tensorflow::DT_FLOAT;
    const std::int64_t words = params_.words();

    const int rank = input.dims();
    OP_REQUIRES(ctx, rank >= 4,
                InvalidArgument(kOp, ": input must be 4-D NHWC or of higher rank [..., H, W, C], "
                                "got shape ", input.shape().DebugString()));
    const std::int64_t expected_depth = packed_input ? words : params_.channels_in;
    OP_REQUIRES(ctx, input.dim_size(rank - 1) == expected_depth,
                InvalidArgument(kOp, ": input depth ", input.dim_size(rank - 1),
                                packed_input ? " (packed words)" : " (channels)",
                                " does not match channels_in = ", params_.channels_in,
                                ", expected ", expected_depth));
    std::int64_t out_channels = 0;
    if (float_filter) {
      // The Keras kernel, HWIO; packed here (training through the fast path).
      const tensorflow::TensorShape& s = filter.shape();
      OP_REQUIRES(ctx, filter.dims() == 4 && s.dim_size(0) == params_.kernel_h &&
                           s.dim_size(1) == params_.kernel_w &&
                           s.dim_size(2) == params_.channels_in && s.dim_size(3) >= 1,
                  InvalidArgument(kOp, ": a float filter must be the HWIO kernel [",
                                  params_.kernel_h, ", ", params_.kernel_w, ", ",
                                  params_.channels_in, ", C_out], got shape ", s.DebugString()));
      out_channels = s.dim_size(3);
    } else {
      OP_REQUIRES(ctx, filter.dims() == 2,
                  InvalidArgument(kOp, ": filter must be 2-D [C_out, words], got shape ",
                                  filter.shape().DebugString()));
      const std::int64_t filter_words =
          CompactFilterWords(params_.kernel_h, params_.kernel_w, params_.channels_in);
      OP_REQUIRES(ctx, filter.dim_size(1) == filter_words,
                  InvalidArgument(kOp, ": filter has ", filter.dim_size(1),
                                  " packed words per output channel, but kernel ",
                                  params_.kernel_h, "x", params_.kernel_w,
                                  " with channels_in = ", params_.channels_in, " needs ",
                                  filter_words));
      out_channels = filter.dim_size(0);
    }
    OP_REQUIRES(ctx, multiplier.dims() == 1 && multiplier.dim_size(0) == out_channels,
                InvalidArgument(kOp, ": multiplier must have shape [", out_channels, "], got ",
                                multiplier.shape().DebugString()));
    OP_REQUIRES(ctx, bias.dims() == 1 && bias.dim_size(0) == out_channels,
                InvalidArgument(kOp, ": bias must have shape [", out_channels, "], got ",
                                bias.shape().DebugString()));

    BConv2DParams p = params_;
    // The leading dimensions are the batch.
    OP_REQUIRES(ctx, FlattenDims(input.shape().dim_sizes().data(), rank - 3, &p.batch),
                InvalidArgument(kOp, ": too many images in input ", input.shape().DebugString()));
    p.in_h = input.dim_size(rank - 3);
    p.in_w = input.dim_size(rank - 2);
    p.out_channels = out_channels;
    OP_REQUIRES_OK(ctx, ToTf(kOp, ComputeBConv2DGeometry(&p)));

    const bool bitpacked = output_type_ == OutputType::kBitpacked;
    std::vector<std::int32_t> threshold;
    std::vector<std::uint8_t> flip;
    if (bitpacked) {
      threshold.resize(static_cast<std::size_t>(out_channels));
      flip.resize(static_cast<std::size_t>(out_channels));
      OP_REQUIRES_OK(ctx, ToTf(kOp, ComputeBConv2DThresholds(p, multiplier.flat<float>().data(),
                                                             bias.flat<float>().data(),
                                                             threshold.data(), flip.data())));
    }
    tensorflow::TensorShape out_shape = input.shape();
    out_shape.set_dim(rank - 3, p.out_h);
    out_shape.set_dim(rank - 2, p.out_w);
    out_shape.set_dim(rank - 1, bitpacked ? PackedWords(out_channels) : out_channels);
    BConv2DEpilogue epilogue;
    OP_REQUIRES_OK(ctx, ReadEpilogue(ctx, out_shape, &epilogue));
    tensorflow::Tensor* output = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, out_shape, &output));
    if (output->NumElements() == 0) return;

    tensorflow::Tensor packed_scratch, filter_scratch;
    const PackedWord* packed = nullptr;
    OP_REQUIRES_OK(ctx, PackedInput(ctx, input, p.batch * p.in_h * p.in_w, p.channels_in,
                                    &packed_scratch, &packed));
    std::shared_ptr<const BConv2DFilter> prepared;
    OP_REQUIRES_OK(ctx, filters_.Get(
                            p, filter,
                            [&](const PackedWord** compact) {
                              return CompactFilter(ctx, filter,
                                                   p.kernel_h * p.kernel_w * p.channels_in,
                                                   out_channels, &filter_scratch, compact);
                            },
                            &prepared));
    TfExecutor executor(ctx);
    if (bitpacked) {
      BConv2DBitpacked(p, packed, *prepared, threshold.data(), flip.data(),
                       reinterpret_cast<PackedWord*>(output->flat<std::int32_t>().data()),
                       executor);
      return;
    }
    BConv2D(p, packed, *prepared, multiplier.flat<float>().data(), bias.flat<float>().data(),
            output->flat<float>().data(), executor, epilogue);
  }

 private:
  // The epilogue inputs (4 on) checked against the `epilogue` attribute and
  // the output shape.
  tensorflow::Status ReadEpilogue(tensorflow::OpKernelContext* ctx,
                                  const tensorflow::TensorShape& out_shape,
                                  BConv2DEpilogue* epilogue) const {
    const int given = ctx->num_inputs() - 4;
    if (given != epilogue_kind_.inputs()) {
      return InvalidArgument(kOp, ": the epilogue takes ", epilogue_kind_.inputs(),
                             " epilogue inputs, got ", given);
    }
    const std::int64_t out_channels = out_shape.dim_size(out_shape.dims() - 1);
    int next = 4;
    if (epilogue_kind_.affine) {
      const char* names[] = {"post_multiplier", "post_bias"};
      const float* data[2];
      for (int i = 0; i < 2; ++i, ++next) {
        const tensorflow::Tensor& t = ctx->input(next);
        if (t.dims() != 1 || t.dim_size(0) != out_channels) {
          return InvalidArgument(kOp, ": ", names[i], " must have shape [", out_channels,
                                 "], got ", t.shape().DebugString());
        }
        data[i] = t.flat<float>().data();
      }
      epilogue->post_multiplier = data[0];
      epilogue->post_bias = data[1];
    }
    if (epilogue_kind_.add) {
      const tensorflow::Tensor& residual = ctx->input(next);
      if (residual.shape() != out_shape) {
        return InvalidArgument(kOp, ": residual must have the output's shape ",
                               out_shape.DebugString(), ", got ", residual.shape().DebugString());
      }
      epilogue->residual = residual.flat<float>().data();
    }
    return tensorflow::Status();
  }

  BConv2DParams params_;
  OutputType output_type_ = OutputType::kFloat;
  EpilogueKind epilogue_kind_;
  PreparedFilterCache filters_;
};

// One kernel for every input / filter dtype the op allows (dispatch on the
// tensors' dtypes in Compute).
REGISTER_KERNEL_BUILDER(Name("LowbitBconv2d").Device(tensorflow::DEVICE_CPU), BConv2DOp);

}  // namespace lowbit
