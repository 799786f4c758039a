// TFLite shell of LowbitMultibitConv2d: multi-bit convolution as P * M binary
// convolutions (core/multibit_conv2d.h).
//
// Inputs:  0 input    float32 [..., H, W, C] (leading dimensions shared), or
//                     int8 of that shape quantized per tensor (the planes of
//                     its real values, core/multibit_conv2d.h), or, with
//                     activation_mode "sign", int32 [..., H, W, ceil(C/32)]
//                     (the one plane, packed)
//          1 filter   int32   [M, Cout, ceil(KH*KW*C/32)]  M weight planes, each
//                     packed like LowbitBconv2d's filter; laid out for the
//                     kernel at Prepare when constant and whenever it changes
//          2 alphas   float32 [M, Cout]
//          3 shifts   float32 [N] ("abc"; empty otherwise)
//          4 betas    float32 [P]
//          5 bias     float32 [Cout]
// Output:  0          float32 [..., OH, OW, Cout], or with output_type "int8"
//                     int8 of that shape (quantized with the output tensor's
//                     per-tensor scale and zero point, core/int8_io.h), or
//                     with "bitpacked" int32 [..., OH, OW, ceil(Cout/32)] (the
//                     signs of the float output)
// Options (FlexBuffer map): channels_in, kernel_h, kernel_w, stride_h,
//   stride_w, dilation_h, dilation_w, padding, pad_value, activation (as
//   LowbitBconv2d's), activation_mode ("sign"/"abc"/"dorefa"), activation_bits
//   (int, 0 unless "dorefa"), output_type ("float"/"bitpacked"/"int8";
//   optional, "float" when absent).
#include <climits>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "custom_ops/core/int8_io.h"
#include "custom_ops/core/multibit_conv2d.h"
#include "custom_ops/core/op_options.h"
#include "custom_ops/core/op_shapes.h"
#include "custom_ops/tflite/binary_op_util.h"
#include "custom_ops/tflite/flexbuffer_reader.h"
#include "custom_ops/tflite/op_registry.h"

namespace lowbit {
namespace tflite {
namespace {

Status Error(const std::string& msg) {
  return Status::Error("LowbitMultibitConv2d: " + msg);
}

constexpr int kNumInputs = 6;
const char* const kInputNames[kNumInputs] = {"input", "filter", "alphas",
                                             "shifts", "betas",  "bias"};

class MultibitConv2dOp final : public Op {
 public:
  MultibitConv2dOp(const MultibitConv2DParams& attrs, OutputType output_type,
                   BConv2DKernel kernel)
      : attrs_(attrs), output_type_(output_type), weights_(kernel) {}

  Status Prepare(const std::vector<TensorRef>& inputs, std::size_t num_outputs,
                 std::vector<OutputSpec>* outputs) override {
    prepared_ = false;
    if (inputs.size() != kNumInputs) {
      return Error("expected 6 inputs (input, filter, alphas, shifts, betas, bias), got " +
                   std::to_string(inputs.size()));
    }
    if (num_outputs != 1) return Error("expected 1 output, got " + std::to_string(num_outputs));
    for (int i = 0; i < kNumInputs; ++i) {
      if (!inputs[i].present) return Error(std::string(kInputNames[i]) + " is missing");
      const TfLiteType want = i == 1 ? kTfLiteInt32 : kTfLiteFloat32;
      if (i != 0 && inputs[i].type != want) {
        return Error(std::string(kInputNames[i]) + " must be " + TypeName(want) + ", got " +
                     TypeName(inputs[i].type));
      }
    }
    Status s = ReadInput(inputs[0]);
    if (!s.ok) return Error(s.message);
    const TensorRef& in = inputs[0];
    MultibitConv2DParams p = attrs_;
    Shape shapes[kNumInputs], out;
    for (int i = 0; i < kNumInputs; ++i) shapes[i] = Shape::Of(inputs[i].dims, inputs[i].rank);
    s = CheckMultibitConv2DShapes(shapes[0], input_.type == MultibitInputType::kPacked,
                                  shapes[1], shapes[2], shapes[3], shapes[4], shapes[5],
                                  output_type_, &p, &out);
    if (!s.ok) return Error(s.message);
    if (p.conv.batch > INT_MAX) return Error("input has too many images: " + ShapeString(in));
    // An empty batch is sized as one image below; the delegate skips Eval when
    // the output is empty (delegate.cc, Invoke).
    if (p.conv.batch == 0) p.conv.batch = 1;
    if (p.conv.out_h < 1 || p.conv.out_w < 1 || p.conv.out_h > INT_MAX ||
        p.conv.out_w > INT_MAX) {
      return Error("invalid output size " + std::to_string(p.conv.out_h) + " x " +
                   std::to_string(p.conv.out_w));
    }
    params_ = p;

    // Byte sizes every Eval checks before touching data.
    const std::int64_t cout = p.conv.out_channels;
    const TensorRef& filter = inputs[1];
    const std::int64_t in_pixels = p.conv.batch * p.conv.in_h * p.conv.in_w;
    switch (input_.type) {
      case MultibitInputType::kFloat: need_[0] = Bytes4(in_pixels * p.conv.channels_in); break;
      case MultibitInputType::kInt8: need_[0] = Bytes1(in_pixels * p.conv.channels_in); break;
      case MultibitInputType::kPacked: need_[0] = Bytes4(in_pixels * p.conv.words()); break;
    }
    need_[1] = Bytes4(p.weight_planes * cout * filter.dims[2]);
    need_[2] = Bytes4(p.weight_planes * cout);
    need_[3] = p.num_shifts == 0 ? 0 : Bytes4(p.num_shifts);
    need_[4] = Bytes4(p.activation_planes());
    need_[5] = Bytes4(cout);
    const std::int64_t out_pixels = p.conv.batch * p.conv.out_h * p.conv.out_w;
    output_bytes_ = OutputBytes(
        output_type_,
        out_pixels * (output_type_ == OutputType::kBitpacked ? PackedWords(cout) : cout));
    for (int i = 0; i < kNumInputs; ++i) {
      if (need_[i] == 0 && i != 3) return Error("tensor sizes overflow");
    }
    if (output_bytes_ == 0) return Error("tensor sizes overflow");
    // Laid out now when the filter is a constant, so the first Eval does not pay.
    if (filter.data != nullptr && filter.bytes >= need_[1]) {
      weights_.UpdateFilter(PlaneConvParams(p), filter);
    }

    outputs->assign(1, OutputSpec{});
    (*outputs)[0].type = OutputTensorType(output_type_);
    (*outputs)[0].dims.assign(out.dims.begin(), out.dims.end());
    prepared_ = true;
    return Status::Ok();
  }

  Status Eval(const std::vector<TensorRef>& inputs, const std::vector<TensorRef>& outputs,
              ParallelExecutor& executor) override {
    if (!prepared_ || inputs.size() != kNumInputs || outputs.size() != 1) {
      return Error("Eval called without a successful Prepare");
    }
    // need_ 0: empty shifts.
    Status s = CheckEvalBuffers(inputs, kInputNames, need_, outputs[0],
                                OutputTensorType(output_type_), output_bytes_);
    if (!s.ok) return Error(s.message);
    MultibitOutput output;
    output.type = output_type_;
    output.data = outputs[0].data;
    // The output's quantization is only seen here (Prepare gets no outputs).
    if (output_type_ == OutputType::kInt8) {
      s = TensorInt8Quantization("output", outputs[0], &output.quantization);
      if (!s.ok) return Error(s.message);
    }
    MultibitInput input = input_;
    input.data = inputs[0].data;
    weights_.UpdateFilter(PlaneConvParams(params_), inputs[1]);
    MultibitConv2D(params_, input, static_cast<const float*>(inputs[3].data), weights_.filter(),
                   static_cast<const float*>(inputs[2].data),
                   static_cast<const float*>(inputs[4].data),
                   static_cast<const float*>(inputs[5].data), output, &scratch_, executor);
    return Status::Ok();
  }

 private:
  // Input 0's type (FLOAT32, INT8, packed INT32) and an INT8 one's quantization.
  Status ReadInput(const TensorRef& in) {
    input_ = MultibitInput{};
    if (in.type == kTfLiteInt8) {
      input_.type = MultibitInputType::kInt8;
      return TensorInt8Quantization("input", in, &input_.quantization);
    }
    if (in.type == kTfLiteInt32) {
      input_.type = MultibitInputType::kPacked;
    } else if (in.type != kTfLiteFloat32) {
      return Status::Error(std::string("input must be FLOAT32, INT32 (packed) or INT8, got ") +
                           TypeName(in.type));
    }
    return Status::Ok();
  }

  const MultibitConv2DParams attrs_;  // options only
  const OutputType output_type_;
  MultibitInput input_;               // its type and quantization (no data)
  MultibitConv2DParams params_;       // options + shapes of the last Prepare
  bool prepared_ = false;
  std::size_t need_[kNumInputs] = {};
  std::size_t output_bytes_ = 0;
  PreparedWeights weights_;  // the filter laid out for the kernel (chosen at init)
  MultibitConv2DScratch scratch_;
};

}  // namespace

Status CreateMultibitConv2dOp(const std::uint8_t* options, std::size_t size,
                              std::unique_ptr<Op>* op) {
  flex::Map map;
  Status s = ParseOptions(options, size, &map);
  if (!s.ok) return Error(s.message);
  MultibitConv2DParams attrs;
  OutputType output_type;
  s = ReadMultibitConv2DOptions(FlexOptionSource(map), &attrs, &output_type);
  if (!s.ok) return Error(s.message);
  op->reset(new MultibitConv2dOp(attrs, output_type, SelectBConv2DKernel()));
  return Status::Ok();
}

}  // namespace tflite
}  // namespace lowbit
