// TFLite shell of the int8 conv over few input channels (core/int8_conv2d.h):
// the delegate runs some of the model's BUILTIN CONV_2D nodes itself.
//
// The .tflite file is standard (a CONV_2D builtin, run by XNNPACK or TFLite's
// kernels anywhere our delegate is not); where it is, and the CPU has AVX-512
// VNNI (x86) or NEON (Arm: a Pi 4; SDOT on a Pi 5),
// the delegate claims a CONV_2D node that this file accepts
// (CreateInt8Conv2dBuiltinOp returns ok), because XNNPACK's int8 conv is slow
// there for few input channels (docs/int8.md). Anything it does not accept
// stays with TFLite: no error, no claim.
//
// Accepted: input and output INT8 quantized per tensor; filter an INT8
// constant [out_c, kh, kw, in_c], in_c <= kInt8ConvMaxInputChannels, equal to
// the input's channels (no grouped conv), per-channel (or per-tensor)
// symmetric: zero points 0, quantized_dimension 0; bias absent or an INT32
// constant [out_c]; activation NONE, RELU, RELU_N1_TO_1 or RELU6; any
// padding, stride, dilation; requantization shifts in [-31, 30].
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "custom_ops/core/int8_conv2d.h"
#include "custom_ops/core/int8_io.h"
#include "custom_ops/tflite/op_registry.h"

namespace lowbit {
namespace tflite {
namespace {

Status Error(const std::string& msg) { return Status::Error("CONV_2D (int8): " + msg); }

const TfLiteTensor* TensorAt(TfLiteContext* context, const TfLiteIntArray* list, int i) {
  if (list == nullptr || i >= list->size) return nullptr;
  const int index = list->data[i];
  if (index < 0 || static_cast<std::size_t>(index) >= context->tensors_size) return nullptr;
  return &context->tensors[index];
}

const TfLiteAffineQuantization* Affine(const TfLiteTensor& t) {
  if (t.quantization.type != kTfLiteAffineQuantization) return nullptr;
  const auto* q = static_cast<const TfLiteAffineQuantization*>(t.quantization.params);
  if (q == nullptr || q->scale == nullptr || q->scale->size <= 0) return nullptr;
  return q;
}

// An INT8 activation tensor quantized per tensor: its scale and zero point.
Status PerTensor(const char* what, const TfLiteTensor* t, float* scale, std::int32_t* zp) {
  if (t == nullptr || t->type != kTfLiteInt8) return Error(std::string(what) + " is not INT8");
  const TfLiteAffineQuantization* q = Affine(*t);
  if (q == nullptr || q->scale->size != 1 || q->zero_point == nullptr ||
      q->zero_point->size != 1) {
    return Error(std::string(what) + " is not quantized per tensor");
  }
  Status s = CheckInt8Quantization(what, q->scale->data[0], q->zero_point->data[0]);
  if (!s.ok) return Error(s.message);
  *scale = q->scale->data[0];
  *zp = q->zero_point->data[0];
  return Status::Ok();
}

// The fused activation's range in output codes (TFLite's
// CalculateActivationRangeQuantized: zero_point + round(limit / scale) in
// float32, clamped to [-128, 127]).
bool ActivationRange(int activation, float scale, std::int32_t zp, std::int32_t* low,
                     std::int32_t* high) {
  auto code = [&](float limit) {
    const double q = static_cast<double>(std::round(limit / scale)) + zp;
    return static_cast<std::int32_t>(std::min(std::max(q, -1e6), 1e6));
  };
  *low = -128;
  *high = 127;
  switch (activation) {
    case kTfLiteActNone: return true;
    case kTfLiteActRelu: *low = std::max(*low, code(0.0f)); return true;
    case kTfLiteActRelu6:
      *low = std::max(*low, code(0.0f));
      *high = std::min(*high, code(6.0f));
      return true;
    case kTfLiteActReluN1To1:
      *low = std::max(*low, code(-1.0f));
      *high = std::min(*high, code(1.0f));
      return true;
    default: return false;
  }
}

class Int8Conv2dOp final : public Op {
 public:
  Int8Conv2dOp(Int8Conv2DPlan plan, const TfLiteConvParams& conv, std::int32_t output_zp,
               std::int32_t out_min, std::int32_t out_max)
      : plan_(std::move(plan)), conv_(conv) {
    params_.input_zero_point = plan_.input_zero_point();
    params_.output_zero_point = output_zp;
    params_.out_min = out_min;
    params_.out_max = out_max;
  }

  Status Prepare(const std::vector<TensorRef>& inputs, std::size_t num_outputs,
                 std::vector<OutputSpec>* outputs) override {
    if (inputs.empty() || num_outputs != 1) return Error("expected 2-3 inputs and 1 output");
    const TensorRef& in = inputs[0];
    if (!in.present || in.type != kTfLiteInt8 || in.rank != 4 || in.dims[3] != plan_.in_c()) {
      return Error("input must be INT8 [batch, height, width, " + std::to_string(plan_.in_c()) +
                   "], got " + TypeName(in.type) + " " + ShapeString(in));
    }
    Int8Conv2DParams& p = params_;
    p.batch = in.dims[0];
    p.in_h = in.dims[1];
    p.in_w = in.dims[2];
    p.in_c = plan_.in_c();
    p.out_c = plan_.out_c();
    p.kernel_h = plan_.kernel_h();
    p.kernel_w = plan_.kernel_w();
    p.stride_h = conv_.stride_height;
    p.stride_w = conv_.stride_width;
    p.dilation_h = conv_.dilation_height_factor;
    p.dilation_w = conv_.dilation_width_factor;
    ComputeInt8Conv2DGeometry(conv_.padding == kTfLitePaddingSame, &p);
    const std::int64_t in_elements =
        static_cast<std::int64_t>(p.batch) * p.in_h * p.in_w * p.in_c;
    const std::int64_t out_elements =
        static_cast<std::int64_t>(p.batch) * p.out_h * p.out_w * p.out_c;
    // The kernel's padded image and offsets are int64 but its row indices int.
    if (in_elements > (INT_MAX / 4) || out_elements > (INT_MAX / 4)) {
      return Error("tensors too large");
    }
    input_bytes_ = static_cast<std::size_t>(in_elements);
    output_bytes_ = static_cast<std::size_t>(out_elements);
    outputs->assign(1, OutputSpec{kTfLiteInt8, {p.batch, p.out_h, p.out_w, p.out_c}});
    return Status::Ok();
  }

  Status Eval(const std::vector<TensorRef>& inputs, const std::vector<TensorRef>& outputs,
              ParallelExecutor& executor) override {
    static const char* const kNames[] = {"input"};
    const std::vector<TensorRef> input(inputs.begin(), inputs.begin() + 1);
    Status s = CheckEvalBuffers(input, kNames, &input_bytes_, outputs[0], kTfLiteInt8,
                                output_bytes_);
    if (!s.ok) return Error(s.message);
    Int8Conv2D(plan_, params_, static_cast<const std::int8_t*>(inputs[0].data),
               static_cast<std::int8_t*>(outputs[0].data), executor);
    return Status::Ok();
  }

 private:
  Int8Conv2DPlan plan_;
  TfLiteConvParams conv_;
  Int8Conv2DParams params_;
  std::size_t input_bytes_ = 0, output_bytes_ = 0;
};

}  // namespace

Status CreateInt8Conv2dBuiltinOp(TfLiteContext* context, const TfLiteNode* node,
                                 std::unique_ptr<Op>* op) {
  if (!Int8Conv2DHasFastPath()) return Error(Int8Conv2DNoFastPathReason());
  if (node == nullptr || node->builtin_data == nullptr || node->inputs == nullptr ||
      node->outputs == nullptr || node->inputs->size < 2 || node->inputs->size > 3 ||
      node->outputs->size != 1) {
    return Error("not a CONV_2D node with 2-3 inputs and 1 output");
  }
  const auto& conv = *static_cast<const TfLiteConvParams*>(node->builtin_data);
  if ((conv.padding != kTfLitePaddingSame && conv.padding != kTfLitePaddingValid) ||
      conv.stride_width < 1 || conv.stride_height < 1 || conv.dilation_width_factor < 1 ||
      conv.dilation_height_factor < 1) {
    return Error("unsupported padding, stride or dilation");
  }
  float input_scale = 0, output_scale = 0;
  std::int32_t input_zp = 0, output_zp = 0;
  Status s = PerTensor("input", TensorAt(context, node->inputs, 0), &input_scale, &input_zp);
  if (!s.ok) return s;
  s = PerTensor("output", TensorAt(context, node->outputs, 0), &output_scale, &output_zp);
  if (!s.ok) return s;
  std::int32_t out_min = 0, out_max = 0;
  if (!ActivationRange(conv.activation, output_scale, output_zp, &out_min, &out_max) ||
      out_min > out_max) {
    return Error("unsupported fused activation");
  }

  const TfLiteTensor* filter = TensorAt(context, node->inputs, 1);
  if (filter == nullptr || filter->type != kTfLiteInt8 || filter->allocation_type != kTfLiteMmapRo ||
      filter->data.data == nullptr || filter->dims == nullptr || filter->dims->size != 4) {
    return Error("filter is not a constant INT8 [out_c, kh, kw, in_c] tensor");
  }
  const int out_c = filter->dims->data[0], kernel_h = filter->dims->data[1],
            kernel_w = filter->dims->data[2], in_c = filter->dims->data[3];
  const TfLiteTensor* input = TensorAt(context, node->inputs, 0);
  if (out_c < 1 || kernel_h < 1 || kernel_w < 1 || in_c < 1 ||
      in_c > kInt8ConvMaxInputChannels || kernel_h > 64 || kernel_w > 64 || out_c > 4096 ||
      input->dims == nullptr || input->dims->size != 4 || input->dims->data[3] != in_c ||
      filter->bytes != static_cast<std::size_t>(out_c) * kernel_h * kernel_w * in_c) {
    return Error("filter shape not taken (more than " +
                 std::to_string(kInt8ConvMaxInputChannels) +
                 " input channels, grouped, or too large)");
  }
  const TfLiteAffineQuantization* fq = Affine(*filter);
  if (fq == nullptr || (fq->scale->size != 1 && fq->scale->size != out_c) ||
      fq->quantized_dimension != 0 || fq->zero_point == nullptr ||
      fq->zero_point->size != fq->scale->size) {
    return Error("filter is not quantized per channel along dimension 0 or per tensor");
  }
  for (int i = 0; i < fq->zero_point->size; ++i) {
    if (fq->zero_point->data[i] != 0) return Error("filter zero point is not 0");
  }

  const std::int32_t* bias = nullptr;
  if (node->inputs->size == 3 && node->inputs->data[2] != kTfLiteOptionalTensor) {
    const TfLiteTensor* b = TensorAt(context, node->inputs, 2);
    if (b == nullptr || b->type != kTfLiteInt32 || b->allocation_type != kTfLiteMmapRo ||
        b->data.data == nullptr || b->bytes != sizeof(std::int32_t) * static_cast<std::size_t>(out_c)) {
      return Error("bias is not a constant INT32 [out_c] tensor");
    }
    bias = static_cast<const std::int32_t*>(b->data.data);
  }

  std::vector<std::int32_t> multiplier(out_c);
  std::vector<int> shift(out_c);
  for (int c = 0; c < out_c; ++c) {
    const float filter_scale = fq->scale->data[fq->scale->size == 1 ? 0 : c];
    if (!(filter_scale > 0.0f) || !std::isfinite(filter_scale)) {
      return Error("filter scale must be finite and > 0");
    }
    // As TFLite: the three float32 scales combined in double precision.
    const double effective = static_cast<double>(input_scale) *
                             static_cast<double>(filter_scale) /
                             static_cast<double>(output_scale);
    QuantizeMultiplier(effective, &multiplier[c], &shift[c]);
    if (shift[c] > 30) return Error("requantization multiplier too large");
  }
  *op = std::make_unique<Int8Conv2dOp>(
      Int8Conv2DPlan(out_c, kernel_h, kernel_w, in_c,
                     static_cast<const std::int8_t*>(filter->data.data), bias,
                     multiplier.data(), shift.data(), input_zp),
      conv, output_zp, out_min, out_max);
  return Status::Ok();
}

}  // namespace tflite
}  // namespace lowbit
