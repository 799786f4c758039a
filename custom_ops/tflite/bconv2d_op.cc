// TFLite shell of LowbitBconv2d: binary 2-D convolution.
//
// Inputs:  0 input       float32 [N, H, W, C]  (bit-packed here), or
//                        int32   [N, H, W, ceil(C/32)] (already packed)
//          1 filter      int32   [Cout, ceil(KH*KW*C/32)]  compact packed OHWI
//                        (see UnpackCompactFilter in core/bconv2d.h), re-laid
//                        out for the kernel (BConv2DFilter) at Prepare when
//                        constant and whenever its words change
//          2 multiplier  float32 [Cout]
//          3 bias        float32 [Cout]
// Output:  0             float32 [N, OH, OW, Cout], or with output_type
//                        "bitpacked" int32 [N, OH, OW, ceil(Cout/32)] (the signs
//                        of the float output, from exact integer thresholds:
//                        core/bconv2d_bitpacked.h)
// Options (FlexBuffer map): channels_in, kernel_h, kernel_w, stride_h, stride_w,
//   dilation_h, dilation_w (ints), padding ("SAME"/"VALID"), pad_value (0/1),
//   activation ("NONE"/"RELU"), output_type ("float"/"bitpacked"; optional,
//   "float" when absent). Unknown keys are ignored.
#include <climits>
#include <cstring>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "custom_ops/core/bconv2d.h"
#include "custom_ops/core/bconv2d_bitpacked.h"
#include "custom_ops/core/bitpack.h"
#include "custom_ops/tflite/flexbuffer_reader.h"
#include "custom_ops/tflite/op_registry.h"

namespace lowbit {
namespace tflite {
namespace {

Status Error(const std::string& msg) {
  return Status::Error("LowbitBconv2d: " + msg);
}

class Bconv2dOp final : public Op {
 public:
  Bconv2dOp(const BConv2DParams& attrs, OutputType output_type, BConv2DKernel kernel)
      : attrs_(attrs), output_type_(output_type), kernel_(kernel) {}

  Status Prepare(const std::vector<TensorRef>& inputs, std::size_t num_outputs,
                 std::vector<OutputSpec>* outputs) override {
    if (inputs.size() != 4) {
      return Error("expected 4 inputs (input, filter, multiplier, bias), got " +
                   std::to_string(inputs.size()));
    }
    if (num_outputs != 1) {
      return Error("expected 1 output, got " + std::to_string(num_outputs));
    }
    const char* names[4] = {"input", "filter", "multiplier", "bias"};
    for (int i = 0; i < 4; ++i) {
      if (!inputs[i].present) return Error(std::string(names[i]) + " is missing");
    }
    const TensorRef& in = inputs[0];
    const TensorRef& filter = inputs[1];
    const TensorRef& mult = inputs[2];
    const TensorRef& bias = inputs[3];
    const std::int64_t channels = attrs_.channels_in;
    const std::int64_t words = PackedWords(channels);

    if (in.type != kTfLiteFloat32 && in.type != kTfLiteInt32) {
      return Error(std::string("input must be FLOAT32 or INT32 (packed), got ") +
                   TypeName(in.type));
    }
    input_packed_ = in.type == kTfLiteInt32;
    if (in.rank != 4) {
      return Error("input must have rank 4 (NHWC), got shape " + ShapeString(in));
    }
    const std::int64_t expected_c = input_packed_ ? words : channels;
    if (in.dims[3] != expected_c) {
      return Error("input " + ShapeString(in) + " has " + std::to_string(in.dims[3]) +
                   (input_packed_ ? " packed words" : " channels") + ", expected " +
                   std::to_string(expected_c) + " for channels_in = " +
                   std::to_string(channels));
    }
    if (filter.type != kTfLiteInt32) {
      return Error(std::string("filter must be INT32 (packed words), got ") +
                   TypeName(filter.type));
    }
    if (filter.rank != 2) {
      return Error("filter must have rank 2 [C_out, words], got shape " + ShapeString(filter));
    }
    // attrs_ passed CheckBConv2DOptions at init, so this cannot overflow.
    const std::int64_t filter_words =
        CompactFilterWords(attrs_.kernel_h, attrs_.kernel_w, channels);
    if (filter.dims[1] != filter_words) {
      return Error("filter " + ShapeString(filter) + " has " + std::to_string(filter.dims[1]) +
                   " words per output channel, expected " + std::to_string(filter_words) +
                   " = ceil(kernel_h * kernel_w * channels_in / 32) for a " +
                   std::to_string(attrs_.kernel_h) + "x" + std::to_string(attrs_.kernel_w) +
                   " kernel with channels_in = " + std::to_string(channels));
    }
    const std::int64_t cout = filter.dims[0];
    if (cout < 1) return Error("filter has no output channels: " + ShapeString(filter));
    const TensorRef* vecs[2] = {&mult, &bias};
    for (int i = 0; i < 2; ++i) {
      const TensorRef& v = *vecs[i];
      if (v.type != kTfLiteFloat32) {
        return Error(std::string(names[2 + i]) + " must be FLOAT32, got " + TypeName(v.type));
      }
      if (v.rank != 1 || v.dims[0] != cout) {
        return Error(std::string(names[2 + i]) + " has shape " + ShapeString(v) +
                     ", expected [" + std::to_string(cout) + "] (filter out channels)");
      }
    }
    for (int i = 0; i < 4; ++i) {
      if (in.dims[i] < 1) return Error("input has an empty dimension: " + ShapeString(in));
    }

    BConv2DParams p = attrs_;
    p.batch = in.dims[0];
    p.in_h = in.dims[1];
    p.in_w = in.dims[2];
    p.out_channels = cout;
    Status s = ComputeBConv2DGeometry(&p);
    if (!s.ok) return Error(s.message);
    if (p.out_h < 1 || p.out_w < 1 || p.out_h > INT_MAX || p.out_w > INT_MAX) {
      return Error("invalid output size " + std::to_string(p.out_h) + " x " +
                   std::to_string(p.out_w));
    }
    params_ = p;

    // Byte sizes every Eval checks before touching data.
    const std::int64_t pixels = p.batch * p.in_h * p.in_w;
    input_bytes_ = Bytes4(pixels * expected_c);
    filter_bytes_ = Bytes4(cout * filter_words);
    vector_bytes_ = Bytes4(cout);
    const bool bitpacked = output_type_ == OutputType::kBitpacked;
    const std::int64_t out_depth = bitpacked ? PackedWords(cout) : cout;
    output_bytes_ = Bytes4(p.batch * p.out_h * p.out_w * out_depth);
    if (!input_bytes_ || !filter_bytes_ || !vector_bytes_ || !output_bytes_) {
      return Error("tensor sizes overflow");
    }
    if (!input_packed_) packed_.resize(static_cast<std::size_t>(pixels * words));
    // Laid out now when the filter data is already there (a constant tensor),
    // so that the first Eval does not pay for it.
    if (filter.data != nullptr && filter.bytes >= filter_bytes_) {
      const PackedWord* compact = static_cast<const PackedWord*>(filter.data);
      if (!filter_.SameSource(kernel_, p, compact)) filter_.Prepare(kernel_, p, compact);
    }

    if (bitpacked) {
      threshold_.resize(static_cast<std::size_t>(cout));
      flip_.resize(static_cast<std::size_t>(cout));
      transform_.clear();  // thresholds are computed from the data, in Eval
      // Constant multiplier and bias are checked now, so that a bad model
      // fails at allocation rather than at the first invocation.
      if (mult.data != nullptr && bias.data != nullptr && mult.bytes >= vector_bytes_ &&
          bias.bytes >= vector_bytes_) {
        s = UpdateThresholds(static_cast<const float*>(mult.data),
                             static_cast<const float*>(bias.data));
        if (!s.ok) return s;
      }
    }

    outputs->assign(1, OutputSpec{});
    (*outputs)[0].type = bitpacked ? kTfLiteInt32 : kTfLiteFloat32;
    (*outputs)[0].dims = {static_cast<int>(p.batch), static_cast<int>(p.out_h),
                          static_cast<int>(p.out_w), static_cast<int>(out_depth)};
    prepared_ = true;
    return Status::Ok();
  }

  Status Eval(const std::vector<TensorRef>& inputs,
              const std::vector<TensorRef>& outputs,
              ParallelExecutor& executor) override {
    if (!prepared_ || inputs.size() != 4 || outputs.size() != 1) {
      return Error("Eval called without a successful Prepare");
    }
    const std::size_t need[4] = {input_bytes_, filter_bytes_, vector_bytes_, vector_bytes_};
    const char* names[4] = {"input", "filter", "multiplier", "bias"};
    for (int i = 0; i < 4; ++i) {
      if (inputs[i].data == nullptr) return Error(std::string(names[i]) + " has no data");
      if (inputs[i].bytes < need[i]) {
        return Error(std::string(names[i]) + " holds " + std::to_string(inputs[i].bytes) +
                     " bytes, expected " + std::to_string(need[i]));
      }
    }
    const TensorRef& out = outputs[0];
    const bool bitpacked = output_type_ == OutputType::kBitpacked;
    const TfLiteType out_type = bitpacked ? kTfLiteInt32 : kTfLiteFloat32;
    if (out.data == nullptr) return Error("output has no data");
    if (out.type != out_type || out.bytes < output_bytes_) {
      return Error(std::string("output must be ") + TypeName(out_type) + " with " +
                   std::to_string(output_bytes_) + " bytes, got " + TypeName(out.type) +
                   " with " + std::to_string(out.bytes));
    }
    const PackedWord* packed_input;
    if (input_packed_) {
      packed_input = static_cast<const PackedWord*>(inputs[0].data);
    } else {
      BitpackRows(static_cast<const float*>(inputs[0].data),
                  params_.batch * params_.in_h * params_.in_w, params_.channels_in,
                  packed_.data(), executor);
      packed_input = packed_.data();
    }
    // The filter is re-laid out for the kernel once and kept while its words
    // stay the same (the usual constant filter); comparing the compact words
    // (1 bit per weight) costs far less than the convolution, and keeps the
    // result right if the filter is not a constant.
    const PackedWord* compact = static_cast<const PackedWord*>(inputs[1].data);
    if (!filter_.SameSource(kernel_, params_, compact)) filter_.Prepare(kernel_, params_, compact);
    if (bitpacked) {
      Status s = UpdateThresholds(static_cast<const float*>(inputs[2].data),
                                  static_cast<const float*>(inputs[3].data));
      if (!s.ok) return s;
      BConv2DBitpacked(params_, packed_input, filter_, threshold_.data(), flip_.data(),
                       static_cast<PackedWord*>(out.data), executor);
      return Status::Ok();
    }
    BConv2D(params_, packed_input, filter_, static_cast<const float*>(inputs[2].data),
            static_cast<const float*>(inputs[3].data), static_cast<float*>(out.data), executor);
    return Status::Ok();
  }

 private:
  // Recomputes the integer thresholds when multiplier or bias differ from the
  // values they were computed from (normally only once: both are constants).
  Status UpdateThresholds(const float* multiplier, const float* bias) {
    const std::size_t cout = static_cast<std::size_t>(params_.out_channels);
    if (transform_.size() == 2 * cout &&
        std::memcmp(transform_.data(), multiplier, cout * sizeof(float)) == 0 &&
        std::memcmp(transform_.data() + cout, bias, cout * sizeof(float)) == 0) {
      return Status::Ok();
    }
    transform_.clear();
    Status s = ComputeBConv2DThresholds(params_, multiplier, bias, threshold_.data(),
                                        flip_.data());
    if (!s.ok) return Error(s.message);
    transform_.assign(multiplier, multiplier + cout);
    transform_.insert(transform_.end(), bias, bias + cout);
    return Status::Ok();
  }

  const BConv2DParams attrs_;   // options only
  const OutputType output_type_;
  const BConv2DKernel kernel_;  // chosen once, at init
  BConv2DParams params_;        // options + shapes of the last Prepare
  bool prepared_ = false;
  bool input_packed_ = false;
  std::size_t input_bytes_ = 0, filter_bytes_ = 0, vector_bytes_ = 0, output_bytes_ = 0;
  std::vector<PackedWord> packed_;          // bit-packed float input
  BConv2DFilter filter_;                    // filter laid out for kernel_
  // output_type "bitpacked": per-channel thresholds and the multiplier and
  // bias words they were computed from (empty: not computed yet).
  std::vector<std::int32_t> threshold_;
  std::vector<std::uint8_t> flip_;
  std::vector<float> transform_;
};

}  // namespace

Status CreateBconv2dOp(const std::uint8_t* options, std::size_t size,
                       std::unique_ptr<Op>* op) {
  flex::Map map;
  Status s = ParseOptions(options, size, &map);
  if (!s.ok) return Error(s.message);

  BConv2DParams attrs;
  if (!(s = ReadConvOptions(map, &attrs)).ok) return Error(s.message);

  // Added after the first version of the contract: absent means "float".
  OutputType output_type = OutputType::kFloat;
  flex::Value value;
  if (map.Find("output_type", &value)) {
    std::string text;
    s = flex::GetString(map, "output_type", &text);
    if (!s.ok) return Error(s.message);
    s = ParseOutputType(text, &output_type);
    if (!s.ok) return Error("option 'output_type': " + s.message);
  }

  s = CheckBConv2DOptions(attrs);
  if (!s.ok) return Error(s.message);
  op->reset(new Bconv2dOp(attrs, output_type, SelectBConv2DKernel()));
  return Status::Ok();
}

}  // namespace tflite
}  // namespace lowbit

// Name of the binary convolution kernel a LowbitBconv2d created now would use
// (LOWBIT_KERNEL and the CPU checks applied), for benchmarks and diagnostics:
// ctypes.CDLL(lowbit_tf._native.tflite_library_path()).lowbit_bconv2d_kernel_name
extern "C" __attribute__((visibility("default"))) const char* lowbit_bconv2d_kernel_name() {
  return lowbit::BConv2DKernelName(lowbit::SelectBConv2DKernel());
}
