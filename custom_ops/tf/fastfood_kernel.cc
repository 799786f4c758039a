// TF kernel of LowbitFastfood: the Adaptive Fastfood transform (core/fastfood.h).
// x is float32 or int8 codes (T = int8, read as input_scale * (q -
// input_zero_point)); the output float32 or int8 (Tout = int8, output_type
// "int8", quantized with output_scale / output_zero_point, core/int8_io.h).

#include "custom_ops/core/bconv2d.h"
#include "custom_ops/core/fastfood.h"
#include "custom_ops/core/op_options.h"
#include "custom_ops/core/op_shapes.h"
#include "custom_ops/tf/attr_source.h"
#include "custom_ops/tf/binary_kernel_util.h"  // TfShape, CheckToutAttr
#include "custom_ops/tf/tf_executor.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"

namespace lowbit {

constexpr char kOp[] = "LowbitFastfood";

class FastfoodOp : public tensorflow::OpKernel {
 public:
  explicit FastfoodOp(tensorflow::OpKernelConstruction* ctx) : OpKernel(ctx) {
    OutputType output_type = OutputType::kFloat;
    OP_REQUIRES_OK(ctx, ToTf(kOp, ReadFastfoodOptions(TfAttrSource(ctx), &units_, &activation_,
                                                      &output_type)));
    OP_REQUIRES_OK(ctx, CheckToutAttr(ctx, kOp, output_type));
    int8_output_ = output_type == OutputType::kInt8;
    // Both quantizations are checked here, used or not (the defaults pass).
    float input_scale = 1.0f, output_scale = 1.0f;
    int input_zero_point = 0, output_zero_point = 0;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("input_scale", &input_scale));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("input_zero_point", &input_zero_point));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("output_scale", &output_scale));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("output_zero_point", &output_zero_point));
    OP_REQUIRES_OK(ctx, ToTf(kOp, CheckInt8Quantization("input", input_scale, input_zero_point)));
    OP_REQUIRES_OK(ctx,
                   ToTf(kOp, CheckInt8Quantization("output", output_scale, output_zero_point)));
    input_quantization_.scale = input_scale;
    input_quantization_.zero_point = input_zero_point;
    output_quantization_.scale = output_scale;
    output_quantization_.zero_point = output_zero_point;
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
    OP_REQUIRES_OK(ctx, ToTf(kOp, CheckFastfoodShapes(
                                      TfShape(x), TfShape(ctx->input(1)), TfShape(ctx->input(2)),
                                      TfShape(ctx->input(3)), TfShape(permutation),
                                      TfShape(bias), &p, &out)));
    const std::int32_t* perm = permutation.flat<std::int32_t>().data();
    OP_REQUIRES_OK(ctx, ToTf(kOp, CheckFastfoodPermutation(p, perm)));

    tensorflow::TensorShape out_shape;
    OP_REQUIRES_OK(ctx, tensorflow::TensorShape::BuildTensorShape(out.dims, &out_shape));
    tensorflow::Tensor* output = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, out_shape, &output));
    if (p.rows == 0) return;
    FastfoodInput in;
    in.data = x.data();
    in.int8 = x.dtype() == tensorflow::DT_INT8;
    in.quantization = input_quantization_;
    FastfoodOutput result;
    result.data = output->data();
    result.int8 = int8_output_;
    result.quantization = output_quantization_;
    TfExecutor executor(ctx);
    Fastfood(p, in, ctx->input(1).flat<float>().data(), ctx->input(2).flat<float>().data(),
             ctx->input(3).flat<float>().data(), perm,
             bias.dim_size(0) > 0 ? bias.flat<float>().data() : nullptr, result, executor);
  }

 private:
  std::int64_t units_ = 0;
  Activation activation_ = Activation::kNone;
  bool int8_output_ = false;
  Int8Quantization input_quantization_;   // an int8 x's scale and zero point
  Int8Quantization output_quantization_;  // an int8 output's
};

REGISTER_KERNEL_BUILDER(Name("LowbitFastfood").Device(tensorflow::DEVICE_CPU), FastfoodOp);

}  // namespace lowbit
