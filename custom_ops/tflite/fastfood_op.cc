// TFLite shell of LowbitFastfood: the Adaptive Fastfood transform (core/fastfood.h).
//
// Inputs:  0 x            float32 [..., d]   (rank >= 1; leading dims are rows),
//                         or int8 of that shape quantized per tensor (read as
//                         its real values, float(q - zero_point) * scale)
//          1 b            float32 [k, n]
//          2 g            float32 [k, n]
//          3 s            float32 [k, n]
//          4 permutation  int32   [k, n], each row a permutation of [0, n)
//          5 bias         float32 [units], or [0] for none
// Output:  0              float32 [..., units], or with output_type "int8" int8
//                         of that shape (quantized with the output tensor's
//                         per-tensor scale and zero point, core/int8_io.h)
// Options (FlexBuffer map): units (int), activation ("NONE"/"RELU"),
//   output_type ("float"/"int8"; optional, "float" when absent). Unknown keys
//   are ignored.
//
// The permutation is validated before it is read through: at Prepare when it
// is a constant, and in Eval whenever its words differ from the validated copy
// the kernel keeps (and computes with).
#include <climits>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "custom_ops/core/bconv2d.h"
#include "custom_ops/core/fastfood.h"
#include "custom_ops/core/int8_io.h"
#include "custom_ops/core/op_options.h"
#include "custom_ops/core/op_shapes.h"
#include "custom_ops/tflite/binary_op_util.h"
#include "custom_ops/tflite/flexbuffer_reader.h"
#include "custom_ops/tflite/op_registry.h"

namespace lowbit {
namespace tflite {
namespace {

Status Error(const std::string& msg) { return Status::Error("LowbitFastfood: " + msg); }

constexpr int kNumInputs = 6;
const char* const kInputNames[kNumInputs] = {"x", "b", "g", "s", "permutation", "bias"};

class FastfoodOp final : public Op {
 public:
  FastfoodOp(std::int64_t units, Activation activation, OutputType output_type)
      : units_(units), activation_(activation), output_type_(output_type) {}

  Status Prepare(const std::vector<TensorRef>& inputs, std::size_t num_outputs,
                 std::vector<OutputSpec>* outputs) override {
    prepared_ = false;
    if (inputs.size() != kNumInputs) {
      return Error("expected 6 inputs (x, b, g, s, permutation, bias), got " +
                   std::to_string(inputs.size()));
    }
    if (num_outputs != 1) return Error("expected 1 output, got " + std::to_string(num_outputs));
    for (int i = 0; i < kNumInputs; ++i) {
      if (!inputs[i].present) return Error(std::string(kInputNames[i]) + " is missing");
      const TfLiteType want = i == 4 ? kTfLiteInt32 : kTfLiteFloat32;
      if (i != 0 && inputs[i].type != want) {
        return Error(std::string(kInputNames[i]) + " must be " + TypeName(want) + ", got " +
                     TypeName(inputs[i].type));
      }
    }
    const TensorRef& x = inputs[0];
    const TensorRef& bias = inputs[5];
    x_int8_ = x.type == kTfLiteInt8;
    if (x_int8_) {
      Status q = TensorInt8Quantization("x", x, &x_quantization_);
      if (!q.ok) return Error(q.message);
    } else if (x.type != kTfLiteFloat32) {
      return Error(std::string("x must be FLOAT32 or INT8, got ") + TypeName(x.type));
    }
    FastfoodParams p;
    p.units = units_;
    p.activation = activation_;
    Shape shapes[kNumInputs], out;
    for (int i = 0; i < kNumInputs; ++i) shapes[i] = Shape::Of(inputs[i].dims, inputs[i].rank);
    Status s = CheckFastfoodShapes(shapes[0], shapes[1], shapes[2], shapes[3], shapes[4],
                                   shapes[5], &p, &out);
    if (!s.ok) return Error(s.message);
    if (p.rows > INT_MAX) return Error("x has too many rows: " + ShapeString(x));
    // Byte sizes every Eval checks before touching data (0 from Bytes4: an
    // overflow of size_t, possible on 32-bit targets). No rows: no data at all.
    diagonal_bytes_ = Bytes4(p.blocks * p.block_size);
    bias_bytes_ = bias.dims[0] > 0 ? Bytes4(p.units) : 0;
    const std::int64_t x_values = p.rows * p.input_dim;
    x_bytes_ = p.rows > 0 ? (x_int8_ ? Bytes1(x_values) : Bytes4(x_values)) : 0;
    output_bytes_ = p.rows > 0 ? OutputBytes(output_type_, p.rows * p.units) : 0;
    if (!diagonal_bytes_ || (bias.dims[0] > 0 && !bias_bytes_) ||
        (p.rows > 0 && (!x_bytes_ || !output_bytes_))) {
      return Error("tensor sizes overflow");
    }
    params_ = p;
    const TensorRef& perm = inputs[4];
    if (perm.data != nullptr && perm.bytes >= diagonal_bytes_) {
      s = UpdatePermutation(static_cast<const std::int32_t*>(perm.data));
      if (!s.ok) return s;  // a bad constant permutation fails at allocation
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
    const std::size_t need[kNumInputs] = {x_bytes_,       diagonal_bytes_, diagonal_bytes_,
                                          diagonal_bytes_, diagonal_bytes_, bias_bytes_};
    // need 0: an empty bias.
    Status s = CheckEvalBuffers(inputs, kInputNames, need, outputs[0],
                                OutputTensorType(output_type_), output_bytes_);
    if (!s.ok) return Error(s.message);
    FastfoodOutput output;
    output.data = outputs[0].data;
    output.int8 = output_type_ == OutputType::kInt8;
    // The output's quantization is only seen here (Prepare gets no outputs).
    if (output.int8) {
      s = TensorInt8Quantization("output", outputs[0], &output.quantization);
      if (!s.ok) return Error(s.message);
    }
    s = UpdatePermutation(static_cast<const std::int32_t*>(inputs[4].data));
    if (!s.ok) return s;
    FastfoodInput x;
    x.data = inputs[0].data;
    x.int8 = x_int8_;
    x.quantization = x_quantization_;
    Fastfood(params_, x, static_cast<const float*>(inputs[1].data),
             static_cast<const float*>(inputs[2].data), static_cast<const float*>(inputs[3].data),
             permutation_.data(),
             bias_bytes_ > 0 ? static_cast<const float*>(inputs[5].data) : nullptr, output,
             executor);
    return Status::Ok();
  }

 private:
  // Validates `perm` [k, n] and keeps a copy unless it equals the copy already
  // validated (the usual constant permutation: a memcmp per invocation).
  Status UpdatePermutation(const std::int32_t* perm) {
    const std::size_t count = static_cast<std::size_t>(params_.blocks * params_.block_size);
    if (permutation_.size() == count &&
        std::memcmp(permutation_.data(), perm, count * sizeof(std::int32_t)) == 0) {
      return Status::Ok();
    }
    permutation_.clear();
    Status s = CheckFastfoodPermutation(params_, perm);
    if (!s.ok) return Error(s.message);
    permutation_.assign(perm, perm + count);
    return Status::Ok();
  }

  const std::int64_t units_;
  const Activation activation_;
  const OutputType output_type_;  // kFloat or kInt8
  FastfoodParams params_;  // options + shapes of the last Prepare
  bool x_int8_ = false;             // x's type at the last Prepare
  Int8Quantization x_quantization_;  // an int8 x's
  bool prepared_ = false;
  std::size_t x_bytes_ = 0, diagonal_bytes_ = 0, bias_bytes_ = 0, output_bytes_ = 0;
  std::vector<std::int32_t> permutation_;  // validated copy (empty: none yet)
};

}  // namespace

Status CreateFastfoodOp(const std::uint8_t* options, std::size_t size, std::unique_ptr<Op>* op) {
  flex::Map map;
  Status s = ParseOptions(options, size, &map);
  if (!s.ok) return Error(s.message);
  std::int64_t units = 0;
  Activation activation = Activation::kNone;
  OutputType output_type = OutputType::kFloat;
  s = ReadFastfoodOptions(FlexOptionSource(map), &units, &activation, &output_type);
  if (!s.ok) return Error(s.message);
  op->reset(new FastfoodOp(units, activation, output_type));
  return Status::Ok();
}

}  // namespace tflite
}  // namespace lowbit
