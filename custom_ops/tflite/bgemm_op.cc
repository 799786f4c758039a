// TFLite shell of LowbitBgemm: binary dense layer / GEMM over the last axis.
//
// Inputs:  0 input       float32 [..., K]  (bit-packed here), or
//                        int32   [..., ceil(K/32)] (already packed), or int8
//                        [..., K] quantized per tensor (bit-packed here: code
//                        < zero point is -1); rank >= 1, the leading
//                        dimensions are rows
//          1 filter      int32   [Nout, ceil(K/32)]  the packed transposed
//                        Keras kernel, laid out for the kernel at Prepare
//                        when constant and whenever its words change
//          2 multiplier  float32 [Nout]
//          3 bias        float32 [Nout]
// Output:  0             float32 [..., Nout], or with output_type "bitpacked"
//                        int32 [..., ceil(Nout/32)] (exact integer thresholds),
//                        or with "int8" int8 [..., Nout] (the float output
//                        quantized with the output tensor's per-tensor scale
//                        and zero point, core/int8_io.h)
// Options (FlexBuffer map): channels_in (int, K), activation ("NONE"/"RELU"),
//   output_type ("float"/"bitpacked"/"int8"; optional, "float" when absent).
//   Unknown keys are ignored.
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "custom_ops/core/bgemm.h"
#include "custom_ops/core/int8_io.h"
#include "custom_ops/core/op_options.h"
#include "custom_ops/core/op_shapes.h"
#include "custom_ops/tflite/binary_op_util.h"
#include "custom_ops/tflite/flexbuffer_reader.h"
#include "custom_ops/tflite/op_registry.h"

namespace lowbit {
namespace tflite {
namespace {

Status Error(const std::string& msg) { return Status::Error("LowbitBgemm: " + msg); }

class BgemmOp final : public Op {
 public:
  BgemmOp(const BGemmParams& attrs, OutputType output_type, BConv2DKernel kernel)
      : attrs_(attrs), output_type_(output_type), kernel_(kernel), weights_(kernel) {}

  Status Prepare(const std::vector<TensorRef>& inputs, std::size_t num_outputs,
                 std::vector<OutputSpec>* outputs) override {
    prepared_ = false;
    if (num_outputs != 1) return Error("expected 1 output, got " + std::to_string(num_outputs));
    Status s = CheckBinaryOpTypes(inputs);
    if (!s.ok) return Error(s.message);
    const TensorRef& in = inputs[0];
    s = input_.Read(in);
    if (!s.ok) return Error(s.message);
    const TensorRef& f = inputs[1];
    const TensorRef& m = inputs[2];
    const TensorRef& b = inputs[3];
    BGemmParams p = attrs_;
    Shape out;
    s = CheckBGemmShapes(Shape::Of(in.dims, in.rank), input_.packed(), Shape::Of(f.dims, f.rank),
                         /*float_filter=*/false, Shape::Of(m.dims, m.rank),
                         Shape::Of(b.dims, b.rank), output_type_, &p, &out);
    if (!s.ok) return Error(s.message);
    const std::int64_t cout = p.out_channels;
    const std::int64_t words = p.words();
    const int rank = in.rank;
    // An empty batch is sized as one row below; the delegate skips Eval when
    // the output is empty (delegate.cc, Invoke).
    if (p.rows == 0) p.rows = 1;
    params_ = p;
    conv_ = p.AsConv2D();

    // Byte sizes every Eval checks before touching data.
    const bool bitpacked = output_type_ == OutputType::kBitpacked;
    std::vector<int> out_dims(out.dims.begin(), out.dims.end());
    const std::int64_t out_sizes[2] = {p.rows, out_dims[rank - 1]};
    std::int64_t out_elements = 0;
    if (!FlattenDims(out_sizes, 2, &out_elements)) return Error("tensor sizes overflow");
    // rows <= 2^30, the input depth < 2^25 (CheckBGemmShapes)
    need_[0] = input_.Bytes(p.rows * (input_.packed() ? words : p.channels_in));
    need_[1] = Bytes4(cout * words);
    need_[2] = need_[3] = Bytes4(cout);
    output_bytes_ = OutputBytes(output_type_, out_elements);
    if (output_type_ == OutputType::kInt8) scratch_.resize(static_cast<std::size_t>(out_elements));
    if (!need_[0] || !need_[1] || !need_[2] || !output_bytes_) {
      return Error("tensor sizes overflow");
    }
    if (!input_.packed()) packed_.resize(static_cast<std::size_t>(p.rows * words));
    // Constant weights are laid out (and a bad transform rejected) now rather
    // than at the first invocation.
    const TensorRef& filter = inputs[1];
    if (filter.data != nullptr && filter.bytes >= need_[1]) {
      weights_.UpdateFilter(conv_, filter);
    }
    const TensorRef& mult = inputs[2];
    const TensorRef& bias = inputs[3];
    if (bitpacked && mult.data != nullptr && bias.data != nullptr && mult.bytes >= need_[2] &&
        bias.bytes >= need_[3]) {
      s = weights_.UpdateThresholds(conv_, static_cast<const float*>(mult.data),
                                    static_cast<const float*>(bias.data));
      if (!s.ok) return Error(s.message);
    }
    outputs->assign(1, OutputSpec{});
    (*outputs)[0].type = OutputTensorType(output_type_);
    (*outputs)[0].dims = std::move(out_dims);
    prepared_ = true;
    return Status::Ok();
  }

  Status Eval(const std::vector<TensorRef>& inputs, const std::vector<TensorRef>& outputs,
              ParallelExecutor& executor) override {
    if (!prepared_ || inputs.size() != 4 || outputs.size() != 1) {
      return Error("Eval called without a successful Prepare");
    }
    const bool bitpacked = output_type_ == OutputType::kBitpacked;
    const TensorRef& out = outputs[0];
    Status s = CheckEvalBuffers(inputs, kBinaryOpInputNames, need_, out,
                                OutputTensorType(output_type_), output_bytes_);
    if (!s.ok) return Error(s.message);
    // The output's quantization is only seen here (Prepare gets no outputs).
    Int8Quantization output_quantization;
    if (output_type_ == OutputType::kInt8) {
      s = TensorInt8Quantization("output", out, &output_quantization);
      if (!s.ok) return Error(s.message);
    }
    const PackedWord* packed_input = input_.Pack(kernel_, inputs[0], params_.rows,
                                                 params_.channels_in, packed_.data(), executor);
    weights_.UpdateFilter(conv_, inputs[1]);
    const float* multiplier = static_cast<const float*>(inputs[2].data);
    const float* bias = static_cast<const float*>(inputs[3].data);
    if (bitpacked) {
      s = weights_.UpdateThresholds(conv_, multiplier, bias);
      if (!s.ok) return Error(s.message);
      BGemmBitpacked(params_, packed_input, weights_.filter(), weights_.threshold(),
                     weights_.flip(), static_cast<PackedWord*>(out.data), executor);
      return Status::Ok();
    }
    if (output_type_ == OutputType::kInt8) {
      BGemmInt8(params_, packed_input, weights_.filter(), multiplier, bias, output_quantization,
                scratch_.data(), static_cast<std::int8_t*>(out.data), executor);
      return Status::Ok();
    }
    BGemm(params_, packed_input, weights_.filter(), multiplier, bias,
          static_cast<float*>(out.data), executor);
    return Status::Ok();
  }

 private:
  const BGemmParams attrs_;  // options only
  const OutputType output_type_;
  BGemmParams params_;       // options + shapes of the last Prepare
  BConv2DParams conv_;       // params_.AsConv2D(), for the prepared weights
  bool prepared_ = false;
  BinaryOpInput input_;  // its type (and zero point)
  std::size_t need_[4] = {0, 0, 0, 0};  // bytes of input, filter, multiplier, bias
  std::size_t output_bytes_ = 0;
  std::vector<PackedWord> packed_;  // bit-packed float or int8 input
  std::vector<float> scratch_;      // the float output of an int8 output
  const BConv2DKernel kernel_;     // chosen when the op was made
  PreparedWeights weights_;         // filter laid out for the kernel, thresholds
};

}  // namespace

Status CreateBgemmOp(const std::uint8_t* options, std::size_t size, std::unique_ptr<Op>* op) {
  flex::Map map;
  Status s = ParseOptions(options, size, &map);
  if (!s.ok) return Error(s.message);
  BGemmParams attrs;
  OutputType output_type;
  s = ReadBGemmOptions(FlexOptionSource(map), &attrs, &output_type);
  if (!s.ok) return Error(s.message);
  op->reset(new BgemmOp(attrs, output_type, SelectBConv2DKernel()));
  return Status::Ok();
}

}  // namespace tflite
}  // namespace lowbit
