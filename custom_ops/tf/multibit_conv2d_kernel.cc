// TF kernel of LowbitMultibitConv2d: multi-bit convolution as P * M binary
// convolutions (core/multibit_conv2d.h). The input is float32, int8 codes
// (T = int8, quantized by input_scale / input_zero_point) or, for activation
// mode "sign", packed words (T = int32); the output float32, int8 (Tout =
// int8, output_type "int8") or packed words (Tout = int32, "bitpacked").
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

constexpr char kOp[] = "LowbitMultibitConv2d";

class MultibitConv2DOp : public tensorflow::OpKernel {
 public:
  explicit MultibitConv2DOp(tensorflow::OpKernelConstruction* ctx)
      : OpKernel(ctx), filter_(SelectBConv2DKernel()) {
    OP_REQUIRES_OK(
        ctx, ToTf(kOp, ReadMultibitConv2DOptions(TfAttrSource(ctx), &params_, &output_type_)));
    OP_REQUIRES_OK(ctx, CheckToutAttr(ctx, kOp, output_type_));
    OP_REQUIRES_OK(ctx, ReadInt8Attrs(ctx, kOp, &int8_));
    // Unlike the binary ops, the planes of "abc" and "dorefa" depend on the
    // input's real values, so its scale is an attribute too.
    float input_scale = 1.0f;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("input_scale", &input_scale));
    OP_REQUIRES_OK(ctx, ToTf(kOp, CheckInt8Quantization("input", input_scale,
                                                        int8_.input_zero_point)));
    input_quantization_.scale = input_scale;
    input_quantization_.zero_point = int8_.input_zero_point;
  }

  void Compute(tensorflow::OpKernelContext* ctx) override {
    IeeeSubnormals ieee;  // the TFLite shell's float arithmetic (tf_executor.h)
    const tensorflow::Tensor& input = ctx->input(0);
    const tensorflow::Tensor& filter = ctx->input(1);
    const tensorflow::Tensor& alphas = ctx->input(2);
    const tensorflow::Tensor& shifts = ctx->input(3);
    const tensorflow::Tensor& betas = ctx->input(4);
    const tensorflow::Tensor& bias = ctx->input(5);

    MultibitInput in;
    in.data = input.data();
    in.type = input.dtype() == tensorflow::DT_INT32  ? MultibitInputType::kPacked
              : input.dtype() == tensorflow::DT_INT8 ? MultibitInputType::kInt8
                                                     : MultibitInputType::kFloat;
    in.quantization = input_quantization_;
    MultibitConv2DParams p = params_;
    Shape out;
    OP_REQUIRES_OK(ctx, ToTf(kOp, CheckMultibitConv2DShapes(
                                      TfShape(input), in.type == MultibitInputType::kPacked,
                                      TfShape(filter), TfShape(alphas), TfShape(shifts),
                                      TfShape(betas), TfShape(bias), output_type_, &p, &out)));
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
    MultibitOutput result;
    result.type = output_type_;
    result.data = output->data();
    result.quantization = int8_.output;
    MultibitConv2DScratch scratch;
    MultibitConv2D(p, in, shifts.flat<float>().data(), *prepared, alphas.flat<float>().data(),
                   betas.flat<float>().data(), bias.flat<float>().data(), result, &scratch,
                   executor);
  }

 private:
  MultibitConv2DParams params_;  // options only
  OutputType output_type_ = OutputType::kFloat;
  Int8Attrs int8_;                       // input zero point, output quantization
  Int8Quantization input_quantization_;  // an int8 input's scale and zero point
  PreparedFilterCache filter_;
};

REGISTER_KERNEL_BUILDER(Name("LowbitMultibitConv2d").Device(tensorflow::DEVICE_CPU),
                        MultibitConv2DOp);

}  // namespace lowbit
