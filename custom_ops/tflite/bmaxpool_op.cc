// TFLite shell of LowbitBMaxPool2d: max-pooling of bit-packed +-1 values.
//
// Input:   0 input   int32 [..., H, W, ceil(channels/32)]  packed, rank >= 4:
//                    the leading dimensions are the batch
// Output:  0         int32 [..., OH, OW, ceil(channels/32)] packed
// Options (FlexBuffer map): channels, filter_h, filter_w, stride_h, stride_w
//   (ints), padding ("SAME"/"VALID"). Unknown keys are ignored.
#include <climits>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "custom_ops/core/bconv2d.h"
#include "custom_ops/core/bmaxpool.h"
#include "custom_ops/core/op_options.h"
#include "custom_ops/core/op_shapes.h"
#include "custom_ops/tflite/flexbuffer_reader.h"
#include "custom_ops/tflite/op_registry.h"

namespace lowbit {
namespace tflite {
namespace {

Status Error(const std::string& msg) { return Status::Error("LowbitBMaxPool2d: " + msg); }

class BMaxPool2dOp final : public Op {
 public:
  explicit BMaxPool2dOp(const BMaxPool2DParams& attrs) : attrs_(attrs) {}

  Status Prepare(const std::vector<TensorRef>& inputs, std::size_t num_outputs,
                 std::vector<OutputSpec>* outputs) override {
    prepared_ = false;
    if (inputs.size() != 1) {
      return Error("expected 1 input, got " + std::to_string(inputs.size()));
    }
    if (num_outputs != 1) return Error("expected 1 output, got " + std::to_string(num_outputs));
    const TensorRef& in = inputs[0];
    if (!in.present) return Error("input is missing");
    if (in.type != kTfLiteInt32) {
      return Error(std::string("input must be INT32 (packed), got ") + TypeName(in.type));
    }
    BMaxPool2DParams p = attrs_;
    Shape out;
    Status s = CheckBMaxPool2DShapes(Shape::Of(in.dims, in.rank), &p, &out);
    if (!s.ok) return Error(s.message);
    const std::int64_t words = p.words();
    // An empty batch is sized as one image below; the delegate skips Eval when
    // the output is empty (delegate.cc, Invoke).
    if (p.batch == 0) p.batch = 1;
    if (p.out_h > INT_MAX || p.out_w > INT_MAX) return Error("output size overflows");
    std::vector<int> out_dims(out.dims.begin(), out.dims.end());
    const std::int64_t in_sizes[4] = {p.batch, p.in_h, p.in_w, words};
    const std::int64_t out_sizes[4] = {p.batch, p.out_h, p.out_w, words};
    std::int64_t in_elements = 0, out_elements = 0;
    if (!FlattenDims(in_sizes, 4, &in_elements) || !FlattenDims(out_sizes, 4, &out_elements)) {
      return Error("tensor sizes overflow");
    }
    input_bytes_ = Bytes4(in_elements);
    output_bytes_ = Bytes4(out_elements);
    if (!input_bytes_ || !output_bytes_) return Error("tensor sizes overflow");
    params_ = p;
    outputs->assign(1, OutputSpec{});
    (*outputs)[0].type = kTfLiteInt32;
    (*outputs)[0].dims = std::move(out_dims);
    prepared_ = true;
    return Status::Ok();
  }

  Status Eval(const std::vector<TensorRef>& inputs, const std::vector<TensorRef>& outputs,
              ParallelExecutor& executor) override {
    if (!prepared_ || inputs.size() != 1 || outputs.size() != 1) {
      return Error("Eval called without a successful Prepare");
    }
    if (inputs[0].data == nullptr) return Error("input has no data");
    if (inputs[0].bytes < input_bytes_) {
      return Error("input holds " + std::to_string(inputs[0].bytes) + " bytes, expected " +
                   std::to_string(input_bytes_));
    }
    const TensorRef& out = outputs[0];
    if (out.data == nullptr) return Error("output has no data");
    if (out.type != kTfLiteInt32 || out.bytes < output_bytes_) {
      return Error("output must be INT32 with " + std::to_string(output_bytes_) +
                   " bytes, got " + TypeName(out.type) + " with " + std::to_string(out.bytes));
    }
    BMaxPool2D(params_, static_cast<const PackedWord*>(inputs[0].data),
               static_cast<PackedWord*>(out.data), executor);
    return Status::Ok();
  }

 private:
  const BMaxPool2DParams attrs_;
  BMaxPool2DParams params_;
  bool prepared_ = false;
  std::size_t input_bytes_ = 0, output_bytes_ = 0;
};

}  // namespace

Status CreateBMaxPool2dOp(const std::uint8_t* options, std::size_t size,
                          std::unique_ptr<Op>* op) {
  flex::Map map;
  Status s = ParseOptions(options, size, &map);
  if (!s.ok) return Error(s.message);
  BMaxPool2DParams attrs;
  s = ReadBMaxPool2DOptions(FlexOptionSource(map), &attrs);
  if (!s.ok) return Error(s.message);
  op->reset(new BMaxPool2dOp(attrs));
  return Status::Ok();
}

}  // namespace tflite
}  // namespace lowbit
