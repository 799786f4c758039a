// TFLite shell of LowbitMultibitConv2d: multi-bit convolution as P * M binary
// convolutions (core/multibit_conv2d.h).
//
// Inputs:  0 input    float32 [..., H, W, C] (leading dimensions shared)
//          1 filter   int32   [M, Cout, ceil(KH*KW*C/32)]  M weight planes, each
//                     packed like LowbitBconv2d's filter; laid out for the
//                     kernel at Prepare when constant and whenever it changes
//          2 alphas   float32 [M, Cout]
//          3 shifts   float32 [N] ("abc"; empty otherwise)
//          4 betas    float32 [P]
//          5 bias     float32 [Cout]
// Output:  0          float32 [..., OH, OW, Cout]
// Options (FlexBuffer map): those of LowbitBconv2d except output_type
//   (channels_in, kernel_h, kernel_w, stride_h, stride_w, dilation_h,
//   dilation_w, padding, pad_value, activation), plus activation_mode
//   ("sign"/"abc"/"dorefa") and activation_bits (int, 0 unless "dorefa").
#include <climits>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

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
  MultibitConv2dOp(const MultibitConv2DParams& attrs, BConv2DKernel kernel)
      : attrs_(attrs), weights_(kernel) {}

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
      if (inputs[i].type != want) {
        return Error(std::string(kInputNames[i]) + " must be " + TypeName(want) + ", got " +
                     TypeName(inputs[i].type));
      }
    }
    const TensorRef& in = inputs[0];
    MultibitConv2DParams p = attrs_;
    Shape shapes[kNumInputs], out;
    for (int i = 0; i < kNumInputs; ++i) shapes[i] = Shape::Of(inputs[i].dims, inputs[i].rank);
    Status s = CheckMultibitConv2DShapes(shapes[0], shapes[1], shapes[2], shapes[3], shapes[4],
                                         shapes[5], &p, &out);
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
    need_[0] = Bytes4(p.conv.batch * p.conv.in_h * p.conv.in_w * p.conv.channels_in);
    need_[1] = Bytes4(p.weight_planes * cout * filter.dims[2]);
    need_[2] = Bytes4(p.weight_planes * cout);
    need_[3] = p.num_shifts == 0 ? 0 : Bytes4(p.num_shifts);
    need_[4] = Bytes4(p.activation_planes());
    need_[5] = Bytes4(cout);
    output_bytes_ = Bytes4(p.conv.batch * p.conv.out_h * p.conv.out_w * cout);
    for (int i = 0; i < kNumInputs; ++i) {
      if (need_[i] == 0 && i != 3) return Error("tensor sizes overflow");
    }
    if (output_bytes_ == 0) return Error("tensor sizes overflow");
    // Laid out now when the filter is a constant, so the first Eval does not pay.
    if (filter.data != nullptr && filter.bytes >= need_[1]) {
      weights_.UpdateFilter(PlaneConvParams(p), filter);
    }

    outputs->assign(1, OutputSpec{});
    (*outputs)[0].type = kTfLiteFloat32;
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
    Status s = CheckEvalBuffers(inputs, kInputNames, need_, outputs[0], kTfLiteFloat32,
                                output_bytes_);
    if (!s.ok) return Error(s.message);
    weights_.UpdateFilter(PlaneConvParams(params_), inputs[1]);
    MultibitConv2D(params_, static_cast<const float*>(inputs[0].data),
                   static_cast<const float*>(inputs[3].data), weights_.filter(),
                   static_cast<const float*>(inputs[2].data),
                   static_cast<const float*>(inputs[4].data),
                   static_cast<const float*>(inputs[5].data), static_cast<float*>(outputs[0].data),
                   &scratch_, executor);
    return Status::Ok();
  }

 private:
  const MultibitConv2DParams attrs_;  // options only
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
  s = ReadMultibitConv2DOptions(FlexOptionSource(map), &attrs);
  if (!s.ok) return Error(s.message);
  op->reset(new MultibitConv2dOp(attrs, SelectBConv2DKernel()));
  return Status::Ok();
}

}  // namespace tflite
}  // namespace lowbit
