// TFLite shells of the int8 conv over few input channels and of the int8
// depthwise conv over few channels (core/int8_conv2d.h): the delegate runs
// some of the model's BUILTIN CONV_2D and DEPTHWISE_CONV_2D nodes itself.
//
// The .tflite file is standard (a CONV_2D builtin, run by XNNPACK or TFLite's
// kernels anywhere our delegate is not); where it is, and the CPU has AVX-512
// VNNI, the delegate claims a node that this file accepts
// (CreateInt8Conv2dBuiltinOp / CreateInt8DepthwiseConv2dBuiltinOp return ok),
// because XNNPACK's int8 kernels are slow there for few channels
// (docs/int8.md). Anything it does not accept stays with TFLite: no error, no
// claim.
//
// Accepted: input and output INT8 quantized per tensor; filter an INT8
// constant, per-channel (or per-tensor) symmetric: zero points 0, quantized
// along the output channels; CONV_2D: filter [out_c, kh, kw, in_c], in_c <=
// kInt8ConvMaxInputChannels, equal to the input's channels (no grouped
// conv); DEPTHWISE_CONV_2D: filter [1, kh, kw, c], c equal to the input's
// channels (depth multiplier 1), c <= kInt8DepthwiseMaxChannels; bias absent
// or an INT32 constant [out_c]; activation NONE, RELU, RELU_N1_TO_1 or RELU6;
// any padding, stride, dilation; requantization shifts in [-31, 30].
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

Status Error(const std::string& msg) { return Status::Error("int8 conv: " + msg); }

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

// The geometry options both builtins have.
struct Geometry {
  int padding, stride_w, stride_h, dilation_w, dilation_h, activation;
};

// What the kernels need beyond the plan, and the shapes the op checks.
struct Layer {
  int in_c = 0, out_c = 0, kernel_h = 0, kernel_w = 0;
  Geometry geometry{};
  Int8Conv2DParams quantized;  // zero points and the activation's range only
};

void RunKernel(const Int8Conv2DPlan& plan, const Int8Conv2DParams& p, const std::int8_t* in,
               std::int8_t* out, ParallelExecutor& executor) {
  Int8Conv2D(plan, p, in, out, executor);
}

void RunKernel(const Int8DepthwisePlan& plan, const Int8Conv2DParams& p, const std::int8_t* in,
               std::int8_t* out, ParallelExecutor& executor) {
  Int8DepthwiseConv2D(plan, p, in, out, executor);
}

template <typename Plan>
class Int8ConvOp final : public Op {
 public:
  Int8ConvOp(Plan plan, const Layer& layer) : plan_(std::move(plan)), layer_(layer) {}

  Status Prepare(const std::vector<TensorRef>& inputs, std::size_t num_outputs,
                 std::vector<OutputSpec>* outputs) override {
    if (inputs.empty() || num_outputs != 1) return Error("expected 2-3 inputs and 1 output");
    const TensorRef& in = inputs[0];
    if (!in.present || in.type != kTfLiteInt8 || in.rank != 4 || in.dims[3] != layer_.in_c) {
      return Error("input must be INT8 [batch, height, width, " + std::to_string(layer_.in_c) +
                   "], got " + TypeName(in.type) + " " + ShapeString(in));
    }
    Int8Conv2DParams& p = params_;
    p = layer_.quantized;
    p.batch = in.dims[0];
    p.in_h = in.dims[1];
    p.in_w = in.dims[2];
    p.in_c = layer_.in_c;
    p.out_c = layer_.out_c;
    p.kernel_h = layer_.kernel_h;
    p.kernel_w = layer_.kernel_w;
    const Geometry& g = layer_.geometry;
    p.stride_h = g.stride_h;
    p.stride_w = g.stride_w;
    p.dilation_h = g.dilation_h;
    p.dilation_w = g.dilation_w;
    const bool same = g.padding == kTfLitePaddingSame;
    p.out_h = Int8ConvOutputSize(same, p.in_h, p.kernel_h, p.stride_h, p.dilation_h);
    p.out_w = Int8ConvOutputSize(same, p.in_w, p.kernel_w, p.stride_w, p.dilation_w);
    p.pad_top = Int8ConvPadBefore(p.in_h, p.out_h, p.kernel_h, p.stride_h, p.dilation_h);
    p.pad_left = Int8ConvPadBefore(p.in_w, p.out_w, p.kernel_w, p.stride_w, p.dilation_w);
    const std::int64_t in_elements =
        static_cast<std::int64_t>(p.batch) * p.in_h * p.in_w * p.in_c;
    const std::int64_t out_elements =
        static_cast<std::int64_t>(p.batch) * p.out_h * p.out_w * p.out_c;
    // The kernels' padded image and offsets are int64 but their row indices int.
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
    RunKernel(plan_, params_, static_cast<const std::int8_t*>(inputs[0].data),
              static_cast<std::int8_t*>(outputs[0].data), executor);
    return Status::Ok();
  }

 private:
  Plan plan_;
  Layer layer_;
  Int8Conv2DParams params_;
  std::size_t input_bytes_ = 0, output_bytes_ = 0;
};

// The checks both builtins share, and what they read: the node's structure,
// the geometry, the activations' quantization and range, the filter (a
// constant INT8 of rank 4, quantized along `channel_dim` with zero points 0),
// the bias and the per-channel multipliers. `layer->out_c` is the filter's
// dimension `channel_dim`; the caller checks the filter's other dimensions.
Status ReadLayer(TfLiteContext* context, const TfLiteNode* node, const Geometry& g,
                 int channel_dim, Layer* layer, const TfLiteTensor** filter_out,
                 const std::int32_t** bias_out, std::vector<std::int32_t>* multiplier,
                 std::vector<int>* shift) {
  if (!Int8Conv2DHasFastPath()) return Error("this CPU lacks AVX-512 VNNI");
  if (node->inputs == nullptr || node->outputs == nullptr || node->inputs->size < 2 ||
      node->inputs->size > 3 || node->outputs->size != 1) {
    return Error("not a node with 2-3 inputs and 1 output");
  }
  if ((g.padding != kTfLitePaddingSame && g.padding != kTfLitePaddingValid) || g.stride_w < 1 ||
      g.stride_h < 1 || g.dilation_w < 1 || g.dilation_h < 1) {
    return Error("unsupported padding, stride or dilation");
  }
  layer->geometry = g;
  float input_scale = 0, output_scale = 0;
  Int8Conv2DParams& q = layer->quantized;
  Status s = PerTensor("input", TensorAt(context, node->inputs, 0), &input_scale,
                       &q.input_zero_point);
  if (!s.ok) return s;
  s = PerTensor("output", TensorAt(context, node->outputs, 0), &output_scale,
                &q.output_zero_point);
  if (!s.ok) return s;
  if (!ActivationRange(g.activation, output_scale, q.output_zero_point, &q.out_min,
                       &q.out_max) ||
      q.out_min > q.out_max) {
    return Error("unsupported fused activation");
  }
  const TfLiteTensor* input = TensorAt(context, node->inputs, 0);
  if (input->dims == nullptr || input->dims->size != 4) return Error("input is not 4-D");
  layer->in_c = input->dims->data[3];

  const TfLiteTensor* filter = TensorAt(context, node->inputs, 1);
  if (filter == nullptr || filter->type != kTfLiteInt8 ||
      filter->allocation_type != kTfLiteMmapRo || filter->data.data == nullptr ||
      filter->dims == nullptr || filter->dims->size != 4) {
    return Error("filter is not a constant INT8 tensor of rank 4");
  }
  const int* dims = filter->dims->data;
  layer->out_c = dims[channel_dim];
  layer->kernel_h = dims[1];
  layer->kernel_w = dims[2];
  if (dims[0] < 1 || dims[1] < 1 || dims[2] < 1 || dims[3] < 1 || dims[1] > 64 || dims[2] > 64 ||
      layer->out_c > 4096 ||
      filter->bytes != static_cast<std::size_t>(dims[0]) * dims[1] * dims[2] * dims[3]) {
    return Error("filter shape not taken");
  }
  const TfLiteAffineQuantization* fq = Affine(*filter);
  if (fq == nullptr || (fq->scale->size != 1 && fq->scale->size != layer->out_c) ||
      (fq->scale->size > 1 && fq->quantized_dimension != channel_dim) ||
      fq->zero_point == nullptr || fq->zero_point->size != fq->scale->size) {
    return Error("filter is not quantized per output channel or per tensor");
  }
  for (int i = 0; i < fq->zero_point->size; ++i) {
    if (fq->zero_point->data[i] != 0) return Error("filter zero point is not 0");
  }

  *bias_out = nullptr;
  if (node->inputs->size == 3 && node->inputs->data[2] != kTfLiteOptionalTensor) {
    const TfLiteTensor* b = TensorAt(context, node->inputs, 2);
    if (b == nullptr || b->type != kTfLiteInt32 || b->allocation_type != kTfLiteMmapRo ||
        b->data.data == nullptr ||
        b->bytes != sizeof(std::int32_t) * static_cast<std::size_t>(layer->out_c)) {
      return Error("bias is not a constant INT32 [out_c] tensor");
    }
    *bias_out = static_cast<const std::int32_t*>(b->data.data);
  }

  multiplier->resize(layer->out_c);
  shift->resize(layer->out_c);
  for (int c = 0; c < layer->out_c; ++c) {
    const float filter_scale = fq->scale->data[fq->scale->size == 1 ? 0 : c];
    if (!(filter_scale > 0.0f) || !std::isfinite(filter_scale)) {
      return Error("filter scale must be finite and > 0");
    }
    // As TFLite: the three float32 scales combined in double precision.
    const double effective = static_cast<double>(input_scale) *
                             static_cast<double>(filter_scale) /
                             static_cast<double>(output_scale);
    QuantizeMultiplier(effective, &(*multiplier)[c], &(*shift)[c]);
    if ((*shift)[c] > 30) return Error("requantization multiplier too large");
  }
  *filter_out = filter;
  return Status::Ok();
}

}  // namespace

Status CreateInt8Conv2dBuiltinOp(TfLiteContext* context, const TfLiteNode* node,
                                 std::unique_ptr<Op>* op) {
  if (node == nullptr || node->builtin_data == nullptr) return Error("no CONV_2D options");
  const auto& conv = *static_cast<const TfLiteConvParams*>(node->builtin_data);
  const Geometry g{conv.padding, conv.stride_width, conv.stride_height,
                   conv.dilation_width_factor, conv.dilation_height_factor, conv.activation};
  Layer layer;
  const TfLiteTensor* filter = nullptr;
  const std::int32_t* bias = nullptr;
  std::vector<std::int32_t> multiplier;
  std::vector<int> shift;
  Status s = ReadLayer(context, node, g, 0, &layer, &filter, &bias, &multiplier, &shift);
  if (!s.ok) return s;
  if (filter->dims->data[3] != layer.in_c || layer.in_c > kInt8ConvMaxInputChannels) {
    return Error("filter shape not taken (more than " +
                 std::to_string(kInt8ConvMaxInputChannels) +
                 " input channels, or grouped)");
  }
  *op = std::make_unique<Int8ConvOp<Int8Conv2DPlan>>(
      Int8Conv2DPlan(layer.out_c, layer.kernel_h, layer.kernel_w, layer.in_c,
                     static_cast<const std::int8_t*>(filter->data.data), bias,
                     multiplier.data(), shift.data(), layer.quantized.input_zero_point),
      layer);
  return Status::Ok();
}

Status CreateInt8DepthwiseConv2dBuiltinOp(TfLiteContext* context, const TfLiteNode* node,
                                          std::unique_ptr<Op>* op) {
  if (node == nullptr || node->builtin_data == nullptr) {
    return Error("no DEPTHWISE_CONV_2D options");
  }
  const auto& conv = *static_cast<const TfLiteDepthwiseConvParams*>(node->builtin_data);
  const Geometry g{conv.padding, conv.stride_width, conv.stride_height,
                   conv.dilation_width_factor, conv.dilation_height_factor, conv.activation};
  Layer layer;
  const TfLiteTensor* filter = nullptr;
  const std::int32_t* bias = nullptr;
  std::vector<std::int32_t> multiplier;
  std::vector<int> shift;
  Status s = ReadLayer(context, node, g, 3, &layer, &filter, &bias, &multiplier, &shift);
  if (!s.ok) return s;
  if (filter->dims->data[0] != 1 || layer.out_c != layer.in_c || conv.depth_multiplier != 1 ||
      layer.in_c > kInt8DepthwiseMaxChannels) {
    return Error("depthwise filter not taken (depth multiplier not 1, or more than " +
                 std::to_string(kInt8DepthwiseMaxChannels) + " channels)");
  }
  *op = std::make_unique<Int8ConvOp<Int8DepthwisePlan>>(
      Int8DepthwisePlan(layer.in_c, layer.kernel_h, layer.kernel_w,
                        static_cast<const std::int8_t*>(filter->data.data), bias,
                        multiplier.data(), shift.data(), layer.quantized.input_zero_point),
      layer);
  return Status::Ok();
}

}  // namespace tflite
}  // namespace lowbit
