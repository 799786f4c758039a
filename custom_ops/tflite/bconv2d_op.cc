// TFLite shell of LowbitBconv2d: binary 2-D convolution.
//
// Inputs:  0 input       float32 [..., H, W, C]  (bit-packed here), or
//                        int32   [..., H, W, ceil(C/32)] (already packed), or
//                        int8    [..., H, W, C] quantized per tensor (bit-packed
//                        here: code < zero point is -1, core/int8_io.h);
//                        rank >= 4, the leading dimensions are the batch
//          1 filter      int32   [Cout, ceil(KH*KW*C/32)]  compact packed OHWI
//                        (see UnpackCompactFilter in core/bconv2d.h), re-laid
//                        out for the kernel (BConv2DFilter) at Prepare when
//                        constant and whenever its words change
//          2 multiplier  float32 [Cout]
//          3 bias        float32 [Cout]
//          4.. with the "epilogue" option (core/bconv2d.h: BConv2DEpilogue):
//                        "affine": post_multiplier, post_bias float32 [Cout];
//                        "add": residual float32 of the output's shape (or
//                        int8 quantized per tensor: its real values are added);
//                        "affine_add": all three in that order
// Output:  0             float32 [..., OH, OW, Cout], or with output_type
//                        "bitpacked" int32 [..., OH, OW, ceil(Cout/32)] (the signs
//                        of the float output, from exact integer thresholds:
//                        core/bconv2d_bitpacked.h), or with output_type "int8"
//                        int8 [..., OH, OW, Cout], the float output quantized
//                        with the output tensor's per-tensor scale and zero
//                        point (core/int8_io.h)
// Options (FlexBuffer map): channels_in, kernel_h, kernel_w, stride_h, stride_w,
//   dilation_h, dilation_w (ints), padding ("SAME"/"VALID"), pad_value (0/1),
//   activation ("NONE"/"RELU"), output_type ("float"/"bitpacked"/"int8";
//   optional, "float" when absent), epilogue ("none"/"affine"/"add"/"affine_add";
//   optional, "none" when absent; float or int8 output), output_activation
//   ("NONE"/"RELU": a ReLU after the epilogue; optional; int8 output only).
//   Unknown keys are ignored.
#include <algorithm>
#include <climits>
#include <cstring>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "custom_ops/core/bconv2d.h"
#include "custom_ops/core/bconv2d_bitpacked.h"
#include "custom_ops/core/bitpack.h"
#include "custom_ops/core/int8_io.h"
#include "custom_ops/core/op_options.h"
#include "custom_ops/core/op_shapes.h"
#include "custom_ops/tflite/binary_op_util.h"
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
  Bconv2dOp(const BConv2DParams& attrs, OutputType output_type, EpilogueKind epilogue,
            BConv2DKernel kernel)
      : attrs_(attrs), output_type_(output_type), epilogue_(epilogue), kernel_(kernel),
        weights_(kernel) {}

  Status Prepare(const std::vector<TensorRef>& inputs, std::size_t num_outputs,
                 std::vector<OutputSpec>* outputs) override {
    prepared_ = false;
    if (num_outputs != 1) {
      return Error("expected 1 output, got " + std::to_string(num_outputs));
    }
    Status s = CheckBinaryOpTypes(inputs, epilogue_.inputs());
    if (!s.ok) return Error(s.message);
    const TensorRef& in = inputs[0];
    s = input_.Read(in);
    if (!s.ok) return Error(s.message);
    const TensorRef& f = inputs[1];
    const TensorRef& m = inputs[2];
    const TensorRef& b = inputs[3];
    BConv2DParams p = attrs_;
    Shape out;
    s = CheckBConv2DShapes(Shape::Of(in.dims, in.rank), input_.packed(), Shape::Of(f.dims, f.rank),
                           /*float_filter=*/false, Shape::Of(m.dims, m.rank),
                           Shape::Of(b.dims, b.rank), output_type_, &p, &out);
    if (!s.ok) return Error(s.message);
    const std::int64_t cout = p.out_channels;
    const std::int64_t words = p.words();
    const std::int64_t filter_words = f.dims[1];
    const int rank = in.rank;
    // An empty batch is sized as one image below; the delegate skips Eval when
    // the output is empty (delegate.cc, Invoke).
    if (p.batch == 0) p.batch = 1;
    if (p.out_h < 1 || p.out_w < 1 || p.out_h > INT_MAX || p.out_w > INT_MAX) {
      return Error("invalid output size " + std::to_string(p.out_h) + " x " +
                   std::to_string(p.out_w));
    }
    params_ = p;

    // Byte sizes every Eval checks before touching data.
    const bool bitpacked = output_type_ == OutputType::kBitpacked;
    const bool int8_out = output_type_ == OutputType::kInt8;
    std::vector<int> out_dims(out.dims.begin(), out.dims.end());
    const std::int64_t in_sizes[4] = {p.batch, p.in_h, p.in_w,
                                      input_.packed() ? words : p.channels_in};
    const std::int64_t out_sizes[4] = {p.batch, p.out_h, p.out_w, out_dims[rank - 1]};
    std::int64_t in_elements = 0, out_elements = 0;
    if (!FlattenDims(in_sizes, 4, &in_elements) || !FlattenDims(out_sizes, 4, &out_elements)) {
      return Error("tensor sizes overflow");
    }
    const std::int64_t pixels = p.batch * p.in_h * p.in_w;  // <= in_elements
    need_.assign(inputs.size(), 0);
    need_[0] = input_.Bytes(in_elements);
    need_[1] = Bytes4(cout * filter_words);
    need_[2] = need_[3] = Bytes4(cout);
    output_bytes_ = OutputBytes(output_type_, out_elements);
    // The float output of an int8 output, for the kernels that do not
    // quantize in their epilogue (none on x86 with SIMD).
    scratch_.resize(int8_out ? static_cast<std::size_t>(BConv2DInt8ScratchSize(kernel_, p)) : 0);
    if (!need_[0] || !need_[1] || !need_[2] || !output_bytes_) {
      return Error("tensor sizes overflow");
    }
    s = CheckEpilogueInputs(inputs, cout, out_dims);
    if (!s.ok) return Error(s.message);
    if (!input_.packed()) packed_.resize(static_cast<std::size_t>(pixels * words));
    // Laid out now when the filter data is already there (a constant tensor),
    // so that the first Eval does not pay for it.
    const TensorRef& filter = inputs[1];
    if (filter.data != nullptr && filter.bytes >= need_[1]) {
      weights_.UpdateFilter(p, filter);
    }
    // Constant multiplier and bias are checked now, so that a bad model fails
    // at allocation rather than at the first invocation.
    const TensorRef& mult = inputs[2];
    const TensorRef& bias = inputs[3];
    if (bitpacked && mult.data != nullptr && bias.data != nullptr && mult.bytes >= need_[2] &&
        bias.bytes >= need_[3]) {
      s = weights_.UpdateThresholds(p, static_cast<const float*>(mult.data),
                                    static_cast<const float*>(bias.data));
      if (!s.ok) return Error(s.message);
    }

    outputs->assign(1, OutputSpec{});
    (*outputs)[0].type = OutputTensorType(output_type_);
    (*outputs)[0].dims = std::move(out_dims);
    prepared_ = true;
    return Status::Ok();
  }

  Status Eval(const std::vector<TensorRef>& inputs,
              const std::vector<TensorRef>& outputs,
              ParallelExecutor& executor) override {
    if (!prepared_ || inputs.size() != need_.size() || outputs.size() != 1) {
      return Error("Eval called without a successful Prepare");
    }
    const bool bitpacked = output_type_ == OutputType::kBitpacked;
    const TensorRef& out = outputs[0];
    Status s = CheckEvalBuffers(inputs, names_.data(), need_.data(), out,
                                OutputTensorType(output_type_), output_bytes_);
    if (!s.ok) return Error(s.message);
    // The output's quantization is only seen here (Prepare gets no outputs).
    Int8Quantization output_quantization;
    if (output_type_ == OutputType::kInt8) {
      s = TensorInt8Quantization("output", out, &output_quantization);
      if (!s.ok) return Error(s.message);
      output_quantization.relu = epilogue_.output_relu;
    }
    const PackedWord* packed_input =
        input_.Pack(kernel_, inputs[0], params_.batch * params_.in_h * params_.in_w,
                    params_.channels_in, packed_.data(), executor);
    weights_.UpdateFilter(params_, inputs[1]);
    const float* multiplier = static_cast<const float*>(inputs[2].data);
    const float* bias = static_cast<const float*>(inputs[3].data);
    if (bitpacked) {
      s = weights_.UpdateThresholds(params_, multiplier, bias);
      if (!s.ok) return Error(s.message);
      BConv2DBitpacked(params_, packed_input, weights_.filter(), weights_.threshold(),
                       weights_.flip(), static_cast<PackedWord*>(out.data), executor);
      return Status::Ok();
    }
    BConv2DEpilogue epilogue;
    std::size_t next = 4;
    if (epilogue_.affine) {
      epilogue.post_multiplier = static_cast<const float*>(inputs[next++].data);
      epilogue.post_bias = static_cast<const float*>(inputs[next++].data);
    }
    if (epilogue_.add && residual_int8_) {
      // Its real values are added, read from the codes by the kernel
      // (core/bconv2d.h: BConv2DEpilogue).
      Int8Quantization rq;
      s = TensorInt8Quantization("residual", inputs[next], &rq);
      if (!s.ok) return Error(s.message);
      epilogue.residual_int8 = static_cast<const std::int8_t*>(inputs[next].data);
      epilogue.residual_scale = rq.scale;
      epilogue.residual_zero_point = rq.zero_point;
    } else if (epilogue_.add) {
      epilogue.residual = static_cast<const float*>(inputs[next].data);
    }
    if (output_type_ == OutputType::kInt8) {
      BConv2DInt8(params_, packed_input, weights_.filter(), multiplier, bias, epilogue,
                  output_quantization, scratch_.data(), static_cast<std::int8_t*>(out.data),
                  executor);
      return Status::Ok();
    }
    BConv2D(params_, packed_input, weights_.filter(), multiplier, bias,
            static_cast<float*>(out.data), executor, epilogue);
    return Status::Ok();
  }

 private:
  // Inputs 4.. against the epilogue option; sets their names and byte sizes.
  Status CheckEpilogueInputs(const std::vector<TensorRef>& inputs, std::int64_t cout,
                             const std::vector<int>& out_dims) {
    names_.assign(kBinaryOpInputNames, kBinaryOpInputNames + 4);
    if (epilogue_.affine) {
      for (const char* name : {"post_multiplier", "post_bias"}) {
        const TensorRef& v = inputs[names_.size()];
        if (!v.present) return Status::Error(std::string(name) + " is missing");
        if (v.type != kTfLiteFloat32 || v.rank != 1 || v.dims[0] != cout) {
          return Status::Error(std::string(name) + " must be FLOAT32 [" + std::to_string(cout) +
                               "], got " + TypeName(v.type) + " " + ShapeString(v));
        }
        need_[names_.size()] = need_[2];
        names_.push_back(name);
      }
    }
    residual_int8_ = false;
    if (epilogue_.add) {
      const TensorRef& r = inputs[names_.size()];
      if (!r.present) return Status::Error("residual is missing");
      const bool same_shape = r.rank == static_cast<int>(out_dims.size()) &&
                              std::equal(out_dims.begin(), out_dims.end(), r.dims);
      // An int8 residual (a quantized model) is added as its real values.
      residual_int8_ = r.type == kTfLiteInt8;
      if ((r.type != kTfLiteFloat32 && !residual_int8_) || !same_shape) {
        TensorRef want;
        want.rank = static_cast<int>(out_dims.size());
        want.dims = out_dims.data();
        return Status::Error("residual must be FLOAT32 or INT8 of the output's shape " +
                             ShapeString(want) + ", got " + TypeName(r.type) + " " +
                             ShapeString(r));
      }
      if (residual_int8_) {
        Int8Quantization rq;
        Status s = TensorInt8Quantization("residual", r, &rq);
        if (!s.ok) return s;
      }
      const std::size_t elements =
          output_bytes_ / (output_type_ == OutputType::kInt8 ? 1 : 4);
      need_[names_.size()] = residual_int8_ ? elements : elements * 4;
      names_.push_back("residual");
    }
    return Status::Ok();
  }

  const BConv2DParams attrs_;   // options only
  const OutputType output_type_;
  const EpilogueKind epilogue_;
  BConv2DParams params_;        // options + shapes of the last Prepare
  bool prepared_ = false;
  BinaryOpInput input_;  // its type (and zero point)
  bool residual_int8_ = false;
  std::vector<float> scratch_;  // the float output of an int8 output (if needed)
  std::vector<std::size_t> need_;   // bytes of each input (0: may be empty)
  std::vector<const char*> names_;  // of each input, for messages
  std::size_t output_bytes_ = 0;
  std::vector<PackedWord> packed_;  // bit-packed float or int8 input
  const BConv2DKernel kernel_;     // chosen when the op was made
  PreparedWeights weights_;         // filter laid out for the kernel, thresholds
};

}  // namespace

Status CreateBconv2dOp(const std::uint8_t* options, std::size_t size,
                       std::unique_ptr<Op>* op) {
  flex::Map map;
  Status s = ParseOptions(options, size, &map);
  if (!s.ok) return Error(s.message);

  BConv2DParams attrs;
  OutputType output_type;
  EpilogueKind epilogue;
  s = ReadBConv2DOptions(FlexOptionSource(map), &attrs, &output_type, &epilogue);
  if (!s.ok) return Error(s.message);
  op->reset(new Bconv2dOp(attrs, output_type, epilogue, SelectBConv2DKernel()));
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
