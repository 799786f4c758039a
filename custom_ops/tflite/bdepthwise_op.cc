// TFLite shell of LowbitBDepthwiseConv2d: binary depthwise 2-D convolution.
//
// Inputs:  0 input       float32 [..., H, W, C]  (binarised in the kernel or
//                        packed here first: core/bdepthwise.h), or
//                        int32   [..., H, W, ceil(C/32)] (already packed), or
//                        int8    [..., H, W, C] quantized per tensor (code <
//                        zero point is -1, core/int8_io.h); rank >= 4, the
//                        leading dimensions are a batch
//          1 filter      int32   [KH, KW, ceil(C*DM/32)]  (core/bdepthwise.h)
//          2 multiplier  float32 [C*DM]
//          3 bias        float32 [C*DM]
// Output:  0             float32 [..., OH, OW, C*DM], or with output_type
//                        "bitpacked" int32 [..., OH, OW, ceil(C*DM/32)] (the
//                        signs of the float output, from exact integer
//                        thresholds: core/bconv2d_bitpacked.h), or with "int8"
//                        int8 [..., OH, OW, C*DM] (the float output quantized
//                        with the output tensor's scale and zero point)
// Options (FlexBuffer map): channels_in, depth_multiplier, kernel_h, kernel_w,
//   stride_h, stride_w, dilation_h, dilation_w (ints), padding
//   ("SAME"/"VALID"), pad_value (0/1), activation ("NONE"/"RELU"),
//   output_type ("float"/"bitpacked"/"int8"; optional, "float" when absent).
//   Unknown keys are ignored.
#include <climits>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "custom_ops/core/bconv2d_bitpacked.h"
#include "custom_ops/core/bdepthwise.h"
#include "custom_ops/core/int8_io.h"
#include "custom_ops/core/op_options.h"
#include "custom_ops/core/op_shapes.h"
#include "custom_ops/tflite/binary_op_util.h"
#include "custom_ops/tflite/flexbuffer_reader.h"
#include "custom_ops/tflite/op_registry.h"

namespace lowbit {
namespace tflite {
namespace {

Status Error(const std::string& msg) { return Status::Error("LowbitBDepthwiseConv2d: " + msg); }

class BDepthwiseConv2dOp final : public Op {
 public:
  BDepthwiseConv2dOp(const BDepthwiseConv2DParams& attrs, OutputType output_type,
                     BConv2DKernel kernel)
      : attrs_(attrs), output_type_(output_type), kernel_(kernel) {}

  Status Prepare(const std::vector<TensorRef>& inputs, std::size_t num_outputs,
                 std::vector<OutputSpec>* outputs) override {
    prepared_ = false;
    plan_ = BDepthwisePlan();  // of the previous shapes
    thresholds_.Clear();
    if (num_outputs != 1) return Error("expected 1 output, got " + std::to_string(num_outputs));
    Status s = CheckBinaryOpTypes(inputs);
    if (!s.ok) return Error(s.message);
    const TensorRef& in = inputs[0];
    s = input_.Read(in);
    if (!s.ok) return Error(s.message);
    const bool input_packed = input_.packed();
    const TensorRef& f = inputs[1];
    const TensorRef& m = inputs[2];
    const TensorRef& b = inputs[3];
    BDepthwiseConv2DParams p = attrs_;
    Shape out;
    s = CheckBDepthwiseConv2DShapes(Shape::Of(in.dims, in.rank), input_packed,
                                    Shape::Of(f.dims, f.rank), Shape::Of(m.dims, m.rank),
                                    Shape::Of(b.dims, b.rank), output_type_, &p, &out);
    if (!s.ok) return Error(s.message);
    const std::int64_t cout = p.out_channels();
    // An empty batch is sized as one image below; the delegate skips Eval when
    // the output is empty (delegate.cc, Invoke).
    if (p.batch == 0) p.batch = 1;
    if (p.out_h > INT_MAX || p.out_w > INT_MAX) return Error("output size overflows");
    params_ = p;

    // Byte sizes every Eval checks before touching data.
    const std::int64_t pixels = p.batch * p.in_h * p.in_w;
    const bool bitpacked = output_type_ == OutputType::kBitpacked;
    const std::int64_t out_depth = bitpacked ? p.out_words() : cout;
    input_bytes_ = input_.Bytes(pixels * (input_packed ? p.in_words() : p.channels_in));
    filter_bytes_ = Bytes4(DepthwiseFilterWords(p));
    vector_bytes_ = Bytes4(cout);
    output_bytes_ = OutputBytes(output_type_, p.batch * p.out_h * p.out_w * out_depth);
    if (!input_bytes_ || !filter_bytes_ || !vector_bytes_ || !output_bytes_) {
      return Error("tensor sizes overflow");
    }
    if (!input_packed) packed_.resize(static_cast<std::size_t>(pixels * p.in_words()));
    if (output_type_ == OutputType::kInt8) {
      scratch_.resize(static_cast<std::size_t>(p.batch * p.out_h * p.out_w * cout));
    }
    // Weights that are constants of the model (their data is there now) give
    // the plan now, so that a bad model (a non-finite multiplier or bias of a
    // bit-packed output) fails at allocation rather than at the first
    // invocation, and the first invocation costs no more than the others.
    // Other weights are read at Eval.
    if (f.constant && f.data != nullptr && f.bytes >= filter_bytes_ &&
        (!bitpacked || (m.constant && b.constant && m.data != nullptr && b.data != nullptr &&
                        m.bytes >= vector_bytes_ && b.bytes >= vector_bytes_))) {
      s = UpdatePlan(f, m, b);
      if (!s.ok) return Error(s.message);
    }

    outputs->assign(1, OutputSpec{});
    (*outputs)[0].type = OutputTensorType(output_type_);
    (*outputs)[0].dims.assign(out.dims.begin(), out.dims.end());
    prepared_ = true;
    return Status::Ok();
  }

  Status Eval(const std::vector<TensorRef>& inputs, const std::vector<TensorRef>& outputs,
              ParallelExecutor& executor) override {
    if (!prepared_ || inputs.size() != 4 || outputs.size() != 1) {
      return Error("Eval called without a successful Prepare");
    }
    const std::size_t need[4] = {input_bytes_, filter_bytes_, vector_bytes_, vector_bytes_};
    const TensorRef& out = outputs[0];
    Status s = CheckEvalBuffers(inputs, kBinaryOpInputNames, need, out,
                                OutputTensorType(output_type_), output_bytes_);
    if (!s.ok) return Error(s.message);
    s = UpdatePlan(inputs[1], inputs[2], inputs[3]);
    if (!s.ok) return Error(s.message);
    // The output's quantization is only seen here (Prepare gets no outputs).
    Int8Quantization output_quantization;
    if (output_type_ == OutputType::kInt8) {
      s = TensorInt8Quantization("output", out, &output_quantization);
      if (!s.ok) return Error(s.message);
    }
    // A float input with a float or bit-packed output goes to the kernel as it
    // is (binarised there, core/bdepthwise.h); otherwise it is packed here.
    const bool float_input = input_.type == kTfLiteFloat32 && output_type_ != OutputType::kInt8;
    const auto* floats = static_cast<const float*>(inputs[0].data);
    const PackedWord* packed_input =
        float_input ? nullptr
                    : input_.Pack(kernel_, inputs[0], params_.batch * params_.in_h * params_.in_w,
                                  params_.channels_in, packed_.data(), executor);
    const auto* multiplier = static_cast<const float*>(inputs[2].data);
    const auto* bias = static_cast<const float*>(inputs[3].data);
    if (output_type_ == OutputType::kBitpacked) {
      auto* bits = static_cast<PackedWord*>(out.data);
      if (float_input) {
        BDepthwiseConv2DBitpackedFloatInput(plan_, floats, packed_.data(), bits, executor);
      } else {
        BDepthwiseConv2DBitpacked(plan_, packed_input, bits, executor);
      }
      return Status::Ok();
    }
    if (output_type_ == OutputType::kInt8) {
      BDepthwiseConv2DInt8(plan_, packed_input, multiplier, bias, output_quantization,
                           scratch_.data(), static_cast<std::int8_t*>(out.data), executor);
      return Status::Ok();
    }
    if (float_input) {
      BDepthwiseConv2DFloatInput(plan_, floats, packed_.data(), multiplier, bias,
                                 static_cast<float*>(out.data), executor);
    } else {
      BDepthwiseConv2D(plan_, packed_input, multiplier, bias, static_cast<float*>(out.data),
                       executor);
    }
    return Status::Ok();
  }

 private:
  // Makes plan_ that of these weights (sizes checked by the caller): the
  // filter, and for a bit-packed output the multiplier and bias (its
  // thresholds); a float output reads them on every call instead. They are
  // compared with what the plan was built from on every call, constants of
  // the model included: set_tensor writes a constant's buffer in place in
  // both runtimes (the tensor keeps its address), so an unchanged address
  // proves nothing. The comparison reads KH * KW * C / 8 bytes of filter
  // words, and for a bit-packed output 8 * C bytes of multiplier and bias
  // (2.3 KB for 3x3x256: tens of nanoseconds, a few percent of the smallest
  // layer's convolution); only a difference rebuilds the plan (and
  // recomputes the thresholds).
  Status UpdatePlan(const TensorRef& f, const TensorRef& m, const TensorRef& b) {
    const auto* filter = static_cast<const PackedWord*>(f.data);
    bool rebuild = !plan_.prepared() || !plan_.SameFilter(filter);
    const bool bitpacked = output_type_ == OutputType::kBitpacked;
    if (bitpacked) {
      // The depthwise thresholds are those of its per-channel binary conv
      // (ComputeBDepthwiseThresholds).
      bool computed = false;
      Status s = thresholds_.Update(PerChannelConvParams(params_), static_cast<const float*>(m.data),
                                    static_cast<const float*>(b.data), &computed);
      if (!s.ok) return s;
      rebuild = rebuild || computed;
    }
    if (rebuild) {
      plan_.Prepare(kernel_, params_, filter, bitpacked ? thresholds_.threshold() : nullptr,
                    bitpacked ? thresholds_.flip() : nullptr);
    }
    return Status::Ok();
  }

  const BDepthwiseConv2DParams attrs_;  // options only
  const OutputType output_type_;
  const BConv2DKernel kernel_;          // chosen when the op was made
  BDepthwiseConv2DParams params_;       // options + shapes of the last Prepare
  bool prepared_ = false;
  BinaryOpInput input_;  // its type (and zero point)
  std::size_t input_bytes_ = 0, filter_bytes_ = 0, vector_bytes_ = 0, output_bytes_ = 0;
  std::vector<PackedWord> packed_;  // bit-packed float or int8 input
  std::vector<float> scratch_;      // the float output of an int8 output
  // The layer's plan (core/bdepthwise.h) for params_ and the weights of the
  // last Eval (or Prepare), built by UpdatePlan.
  BDepthwisePlan plan_;
  // A bit-packed output's thresholds and flips.
  CachedThresholds thresholds_;
};

}  // namespace

Status CreateBDepthwiseConv2dOp(const std::uint8_t* options, std::size_t size,
                                std::unique_ptr<Op>* op) {
  flex::Map map;
  Status s = ParseOptions(options, size, &map);
  if (!s.ok) return Error(s.message);

  BDepthwiseConv2DParams attrs;
  OutputType output_type;
  s = ReadBDepthwiseConv2DOptions(FlexOptionSource(map), &attrs, &output_type);
  if (!s.ok) return Error(s.message);
  op->reset(new BDepthwiseConv2dOp(attrs, output_type, SelectBConv2DKernel()));
  return Status::Ok();
}

}  // namespace tflite
}  // namespace lowbit
