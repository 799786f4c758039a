// TF kernel of LowbitBconv2d: validates the tensors against the attributes,
// packs a float input (and a float HWIO filter) on the fly, and runs the
// core's binary convolution. Inputs of rank > 4, [..., H, W, C], are a batch
// of images whose leading dimensions are flattened into the batch.
#include <memory>
#include <vector>

#include "custom_ops/core/bconv2d.h"
#include "custom_ops/core/bconv2d_bitpacked.h"
#include "custom_ops/core/op_options.h"
#include "custom_ops/core/op_shapes.h"
#include "custom_ops/tf/attr_source.h"
#include "custom_ops/tf/binary_kernel_util.h"
#include "custom_ops/tf/tf_executor.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"

namespace lowbit {

using tensorflow::errors::InvalidArgument;

constexpr char kOp[] = "LowbitBconv2d";

class BConv2DOp : public tensorflow::OpKernel {
 public:
  explicit BConv2DOp(tensorflow::OpKernelConstruction* ctx)
      : OpKernel(ctx), kernel_(SelectBConv2DKernel()), filters_(kernel_) {
    OP_REQUIRES_OK(ctx, ToTf(kOp, ReadBConv2DOptions(TfAttrSource(ctx), &params_, &output_type_,
                                                     &epilogue_kind_)));
    OP_REQUIRES_OK(ctx, CheckToutAttr(ctx, kOp, output_type_));
    OP_REQUIRES_OK(ctx, ReadInt8Attrs(ctx, kOp, &int8_));
    int8_.output.relu = epilogue_kind_.output_relu;
  }

  void Compute(tensorflow::OpKernelContext* ctx) override {
    IeeeSubnormals ieee;  // the TFLite shell's float arithmetic (tf_executor.h)
    const tensorflow::Tensor& input = ctx->input(0);
    const tensorflow::Tensor& filter = ctx->input(1);
    const tensorflow::Tensor& multiplier = ctx->input(2);
    const tensorflow::Tensor& bias = ctx->input(3);
    const bool float_filter = filter.dtype() == tensorflow::DT_FLOAT;
    BConv2DParams p = params_;
    Shape out;
    OP_REQUIRES_OK(
        ctx, ToTf(kOp, CheckBConv2DShapes(TfShape(input), input.dtype() == tensorflow::DT_INT32,
                                          TfShape(filter), float_filter, TfShape(multiplier),
                                          TfShape(bias), output_type_, &p, &out)));
    const std::int64_t out_channels = p.out_channels;

    const bool bitpacked = output_type_ == OutputType::kBitpacked;
    std::shared_ptr<const ThresholdCache::Entry> thresholds;
    if (bitpacked) {
      OP_REQUIRES_OK(ctx, ToTf(kOp, thresholds_.Get(p, multiplier.flat<float>().data(),
                                                    bias.flat<float>().data(), &thresholds)));
    }
    tensorflow::TensorShape out_shape;
    OP_REQUIRES_OK(ctx, tensorflow::TensorShape::BuildTensorShape(out.dims, &out_shape));
    BConv2DEpilogue epilogue;
    OP_REQUIRES_OK(ctx, ReadEpilogue(ctx, out_shape, &epilogue));
    tensorflow::Tensor* output = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, out_shape, &output));
    if (output->NumElements() == 0) return;

    tensorflow::Tensor packed_scratch, filter_scratch;
    const PackedWord* packed = nullptr;
    OP_REQUIRES_OK(ctx, PackedInput(ctx, kernel_, input, p.batch * p.in_h * p.in_w, p.channels_in,
                                    &packed_scratch, &packed,
                                    int8_.input_zero_point));
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
      BConv2DBitpacked(p, packed, *prepared, thresholds->threshold.data(), thresholds->flip.data(),
                       reinterpret_cast<PackedWord*>(output->flat<std::int32_t>().data()),
                       executor);
      return;
    }
    if (output_type_ == OutputType::kInt8) {
      // The float output, quantized after, for the kernels that do not
      // quantize in their epilogue (none on x86 with SIMD).
      tensorflow::Tensor scratch;
      float* scratch_data = nullptr;
      const std::int64_t scratch_size = BConv2DInt8ScratchSize(prepared->kernel(), p);
      if (scratch_size > 0) {
        OP_REQUIRES_OK(ctx, ctx->allocate_temp(tensorflow::DT_FLOAT,
                                               tensorflow::TensorShape({scratch_size}), &scratch));
        scratch_data = scratch.flat<float>().data();
      }
      BConv2DInt8(p, packed, *prepared, multiplier.flat<float>().data(),
                  bias.flat<float>().data(), epilogue, int8_.output, scratch_data,
                  output->flat<std::int8_t>().data(), executor);
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
  Int8Attrs int8_;  // the quantization of an int8 input / output
  EpilogueKind epilogue_kind_;
  const BConv2DKernel kernel_;  // chosen when the op was made
  PreparedFilterCache filters_;
  ThresholdCache thresholds_;  // of a bit-packed output
};

// One kernel for every input / filter dtype the op allows (dispatch on the
// tensors' dtypes in Compute).
REGISTER_KERNEL_BUILDER(Name("LowbitBconv2d").Device(tensorflow::DEVICE_CPU), BConv2DOp);

}  // namespace lowbit
