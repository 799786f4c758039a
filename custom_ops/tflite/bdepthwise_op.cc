// TFLite shell of LowbitBDepthwiseConv2d: binary depthwise 2-D convolution.
//
// Inputs:  0 input       float32 [..., H, W, C]  (bit-packed here), or
//                        int32   [..., H, W, ceil(C/32)] (already packed);
//                        rank >= 4, the leading dimensions are a batch
//          1 filter      int32   [KH, KW, ceil(C*DM/32)]  (core/bdepthwise.h)
//          2 multiplier  float32 [C*DM]
//          3 bias        float32 [C*DM]
// Output:  0             float32 [..., OH, OW, C*DM], or with output_type
//                        "bitpacked" int32 [..., OH, OW, ceil(C*DM/32)] (the
//                        signs of the float output, from exact integer
//                        thresholds: core/bconv2d_bitpacked.h)
// Options (FlexBuffer map): channels_in, depth_multiplier, kernel_h, kernel_w,
//   stride_h, stride_w, dilation_h, dilation_w (ints), padding
//   ("SAME"/"VALID"), pad_value (0/1), activation ("NONE"/"RELU"),
//   output_type ("float"/"bitpacked"; optional, "float" when absent).
//   Unknown keys are ignored.
#include <climits>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "custom_ops/core/bconv2d_bitpacked.h"
#include "custom_ops/core/bdepthwise.h"
#include "custom_ops/core/bitpack.h"
#include "custom_ops/core/op_options.h"
#include "custom_ops/tflite/binary_op_util.h"
#include "custom_ops/tflite/flexbuffer_reader.h"
#include "custom_ops/tflite/op_registry.h"

namespace lowbit {
namespace tflite {
namespace {

Status Error(const std::string& msg) { return Status::Error("LowbitBDepthwiseConv2d: " + msg); }

class BDepthwiseConv2dOp final : public Op {
 public:
  BDepthwiseConv2dOp(const BDepthwiseConv2DParams& attrs, OutputType output_type)
      : attrs_(attrs), output_type_(output_type) {}

  Status Prepare(const std::vector<TensorRef>& inputs, std::size_t num_outputs,
                 std::vector<OutputSpec>* outputs) override {
    prepared_ = false;
    if (inputs.size() != 4) {
      return Error("expected 4 inputs (input, filter, multiplier, bias), got " +
                   std::to_string(inputs.size()));
    }
    if (num_outputs != 1) return Error("expected 1 output, got " + std::to_string(num_outputs));
    const char* names[4] = {"input", "filter", "multiplier", "bias"};
    for (int i = 0; i < 4; ++i) {
      if (!inputs[i].present) return Error(std::string(names[i]) + " is missing");
    }
    const TensorRef& in = inputs[0];
    const TensorRef& filter = inputs[1];
    const std::int64_t cout = attrs_.out_channels();

    if (in.type != kTfLiteFloat32 && in.type != kTfLiteInt32) {
      return Error(std::string("input must be FLOAT32 or INT32 (packed), got ") +
                   TypeName(in.type));
    }
    input_packed_ = in.type == kTfLiteInt32;
    if (in.rank < 4) {
      return Error("input must have rank >= 4 [..., H, W, C], got shape " + ShapeString(in));
    }
    const int rank = in.rank;
    const std::int64_t expected_c = input_packed_ ? attrs_.in_words() : attrs_.channels_in;
    if (in.dims[rank - 1] != expected_c) {
      return Error("input " + ShapeString(in) + " has " + std::to_string(in.dims[rank - 1]) +
                   (input_packed_ ? " packed words" : " channels") + ", expected " +
                   std::to_string(expected_c) + " for channels_in = " +
                   std::to_string(attrs_.channels_in));
    }
    if (filter.type != kTfLiteInt32) {
      return Error(std::string("filter must be INT32 (packed words), got ") +
                   TypeName(filter.type));
    }
    if (filter.rank != 3 || filter.dims[0] != attrs_.kernel_h ||
        filter.dims[1] != attrs_.kernel_w || filter.dims[2] != attrs_.out_words()) {
      return Error("filter has shape " + ShapeString(filter) + ", expected [" +
                   std::to_string(attrs_.kernel_h) + ", " + std::to_string(attrs_.kernel_w) +
                   ", " + std::to_string(attrs_.out_words()) +
                   "] (kernel_h, kernel_w, packed words of channels_in * depth_multiplier = " +
                   std::to_string(cout) + ")");
    }
    for (int i = 2; i < 4; ++i) {
      const TensorRef& v = inputs[i];
      if (v.type != kTfLiteFloat32) {
        return Error(std::string(names[i]) + " must be FLOAT32, got " + TypeName(v.type));
      }
      if (v.rank != 1 || v.dims[0] != cout) {
        return Error(std::string(names[i]) + " has shape " + ShapeString(v) + ", expected [" +
                     std::to_string(cout) + "] (channels_in * depth_multiplier)");
      }
    }

    BDepthwiseConv2DParams p = attrs_;
    // The leading dimensions are the batch. An empty one is sized as a batch
    // of one below and makes Eval a no-op.
    Status s = FlattenBatch(in, 3, &p.batch);
    if (!s.ok) return Error(s.message);
    empty_batch_ = p.batch == 0;
    if (empty_batch_) p.batch = 1;
    p.in_h = in.dims[rank - 3];
    p.in_w = in.dims[rank - 2];
    s = ComputeBDepthwiseConv2DGeometry(&p);  // rejects batch > 2^30
    if (!s.ok) return Error(s.message);
    if (p.out_h > INT_MAX || p.out_w > INT_MAX) return Error("output size overflows");
    params_ = p;

    // Byte sizes every Eval checks before touching data.
    const std::int64_t pixels = p.batch * p.in_h * p.in_w;
    const bool bitpacked = output_type_ == OutputType::kBitpacked;
    const std::int64_t out_depth = bitpacked ? p.out_words() : cout;
    input_bytes_ = Bytes4(pixels * expected_c);
    filter_bytes_ = Bytes4(DepthwiseFilterWords(p));
    vector_bytes_ = Bytes4(cout);
    output_bytes_ = Bytes4(p.batch * p.out_h * p.out_w * out_depth);
    if (!input_bytes_ || !filter_bytes_ || !vector_bytes_ || !output_bytes_) {
      return Error("tensor sizes overflow");
    }
    if (!input_packed_) packed_.resize(static_cast<std::size_t>(pixels * p.in_words()));
    if (bitpacked) {
      threshold_.resize(static_cast<std::size_t>(cout));
      flip_.resize(static_cast<std::size_t>(cout));
      // Constant multiplier and bias are checked now, so that a bad model
      // fails at allocation rather than at the first invocation.
      const TensorRef& mult = inputs[2];
      const TensorRef& bias = inputs[3];
      if (mult.data != nullptr && bias.data != nullptr && mult.bytes >= vector_bytes_ &&
          bias.bytes >= vector_bytes_) {
        s = ComputeBDepthwiseThresholds(p, static_cast<const float*>(mult.data),
                                        static_cast<const float*>(bias.data), threshold_.data(),
                                        flip_.data());
        if (!s.ok) return Error(s.message);
      }
    }

    outputs->assign(1, OutputSpec{});
    (*outputs)[0].type = bitpacked ? kTfLiteInt32 : kTfLiteFloat32;
    (*outputs)[0].dims.assign(in.dims, in.dims + rank - 3);
    (*outputs)[0].dims.push_back(static_cast<int>(p.out_h));
    (*outputs)[0].dims.push_back(static_cast<int>(p.out_w));
    (*outputs)[0].dims.push_back(static_cast<int>(out_depth));
    prepared_ = true;
    return Status::Ok();
  }

  Status Eval(const std::vector<TensorRef>& inputs, const std::vector<TensorRef>& outputs,
              ParallelExecutor& executor) override {
    if (!prepared_ || inputs.size() != 4 || outputs.size() != 1) {
      return Error("Eval called without a successful Prepare");
    }
    if (empty_batch_) return Status::Ok();  // nothing to read or write
    const std::size_t need[4] = {input_bytes_, filter_bytes_, vector_bytes_, vector_bytes_};
    const TensorRef& out = outputs[0];
    const bool bitpacked = output_type_ == OutputType::kBitpacked;
    Status s = CheckEvalBuffers(inputs, kBinaryOpInputNames, need, out,
                                bitpacked ? kTfLiteInt32 : kTfLiteFloat32, output_bytes_);
    if (!s.ok) return Error(s.message);
    const PackedWord* packed_input;
    if (input_packed_) {
      packed_input = static_cast<const PackedWord*>(inputs[0].data);
    } else {
      BitpackRows(static_cast<const float*>(inputs[0].data),
                  params_.batch * params_.in_h * params_.in_w, params_.channels_in,
                  packed_.data(), executor);
      packed_input = packed_.data();
    }
    const auto* filter = static_cast<const PackedWord*>(inputs[1].data);
    const auto* multiplier = static_cast<const float*>(inputs[2].data);
    const auto* bias = static_cast<const float*>(inputs[3].data);
    if (bitpacked) {
      // O(channels * log K) float evaluations: negligible next to the
      // convolution, so recomputed rather than cached.
      s = ComputeBDepthwiseThresholds(params_, multiplier, bias, threshold_.data(),
                                      flip_.data());
      if (!s.ok) return Error(s.message);
      BDepthwiseConv2DBitpacked(params_, packed_input, filter, threshold_.data(), flip_.data(),
                                static_cast<PackedWord*>(out.data), executor);
      return Status::Ok();
    }
    BDepthwiseConv2D(params_, packed_input, filter, multiplier, bias,
                     static_cast<float*>(out.data), executor);
    return Status::Ok();
  }

 private:
  const BDepthwiseConv2DParams attrs_;  // options only
  const OutputType output_type_;
  BDepthwiseConv2DParams params_;       // options + shapes of the last Prepare
  bool prepared_ = false;
  bool empty_batch_ = false;  // the input's leading dimensions hold no image
  bool input_packed_ = false;
  std::size_t input_bytes_ = 0, filter_bytes_ = 0, vector_bytes_ = 0, output_bytes_ = 0;
  std::vector<PackedWord> packed_;  // bit-packed float input
  std::vector<std::int32_t> threshold_;
  std::vector<std::uint8_t> flip_;
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
  op->reset(new BDepthwiseConv2dOp(attrs, output_type));
  return Status::Ok();
}

}  // namespace tflite
}  // namespace lowbit
