// TF kernel of LowbitBgemm: a binary dense layer over the last axis of an
// input of any rank >= 1, [..., K] -> [..., N_out]; the leading dimensions
// are rows. Packs a float input (and a float [K, N_out] kernel) on the fly
// and runs the core's BGemm (a 1x1 binary convolution over the rows).
#include <memory>
#include <vector>

#include "custom_ops/core/bgemm.h"
#include "custom_ops/core/op_options.h"
#include "custom_ops/core/op_shapes.h"
#include "custom_ops/tf/attr_source.h"
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
      : OpKernel(ctx), kernel_(SelectBConv2DKernel()), filters_(kernel_) {
    OP_REQUIRES_OK(ctx, ToTf(kOp, ReadBGemmOptions(TfAttrSource(ctx), &params_, &output_type_)));
    OP_REQUIRES_OK(ctx, CheckToutAttr(ctx, kOp, output_type_));
    OP_REQUIRES_OK(ctx, ReadInt8Attrs(ctx, kOp, &int8_));
  }

  void Compute(tensorflow::OpKernelContext* ctx) override {
    IeeeSubnormals ieee;  // the TFLite shell's float arithmetic (tf_executor.h)
    const tensorflow::Tensor& input = ctx->input(0);
    const tensorflow::Tensor& filter = ctx->input(1);
    const tensorflow::Tensor& multiplier = ctx->input(2);
    const tensorflow::Tensor& bias = ctx->input(3);
    BGemmParams p = params_;
    Shape out;
    OP_REQUIRES_OK(ctx, ToTf(kOp, CheckBGemmShapes(TfShape(input),
                                                   input.dtype() == tensorflow::DT_INT32,
                                                   TfShape(filter),
                                                   filter.dtype() == tensorflow::DT_FLOAT,
                                                   TfShape(multiplier), TfShape(bias),
                                                   output_type_, &p, &out)));
    const std::int64_t out_channels = p.out_channels;

    const bool bitpacked = output_type_ == OutputType::kBitpacked;
    std::shared_ptr<const ThresholdCache::Entry> thresholds;
    if (bitpacked) {
      OP_REQUIRES_OK(ctx, ToTf(kOp, thresholds_.Get(p.AsConv2D(), multiplier.flat<float>().data(),
                                                    bias.flat<float>().data(), &thresholds)));
    }
    tensorflow::TensorShape out_shape;
    OP_REQUIRES_OK(ctx, tensorflow::TensorShape::BuildTensorShape(out.dims, &out_shape));
    tensorflow::Tensor* output = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, out_shape, &output));
    if (output->NumElements() == 0) return;

    tensorflow::Tensor packed_scratch, filter_scratch;
    const PackedWord* packed = nullptr;
    OP_REQUIRES_OK(ctx, PackedInput(ctx, kernel_, input, p.rows, p.channels_in, &packed_scratch, &packed,
                                    int8_.input_zero_point));
    std::shared_ptr<const BConv2DFilter> prepared;
    OP_REQUIRES_OK(ctx, filters_.Get(
                            p.AsConv2D(), filter,
                            [&](const PackedWord** compact) {
                              return CompactFilter(ctx, filter, p.channels_in, out_channels,
                                                   &filter_scratch, compact);
                            },
                            &prepared));
    TfExecutor executor(ctx);
    if (bitpacked) {
      BGemmBitpacked(p, packed, *prepared, thresholds->threshold.data(), thresholds->flip.data(),
                     reinterpret_cast<PackedWord*>(output->flat<std::int32_t>().data()),
                     executor);
      return;
    }
    if (output_type_ == OutputType::kInt8) {
      tensorflow::Tensor scratch;  // the float output, quantized after
      OP_REQUIRES_OK(ctx, ctx->allocate_temp(tensorflow::DT_FLOAT, out_shape, &scratch));
      BGemmInt8(p, packed, *prepared, multiplier.flat<float>().data(), bias.flat<float>().data(),
                int8_.output, scratch.flat<float>().data(), output->flat<std::int8_t>().data(),
                executor);
      return;
    }
    BGemm(p, packed, *prepared, multiplier.flat<float>().data(), bias.flat<float>().data(),
          output->flat<float>().data(), executor);
  }

 private:
  BGemmParams params_;
  OutputType output_type_ = OutputType::kFloat;
  Int8Attrs int8_;  // the quantization of an int8 input / output
  const BConv2DKernel kernel_;  // chosen when the op was made
  PreparedFilterCache filters_;
  ThresholdCache thresholds_;  // of a bit-packed output
};

// One kernel for every input / filter dtype the op allows.
REGISTER_KERNEL_BUILDER(Name("LowbitBgemm").Device(tensorflow::DEVICE_CPU), BGemmOp);

}  // namespace lowbit
