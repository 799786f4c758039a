// Registrations (signatures, attributes, shape functions) of the lowbit TF ops.
// The kernels live in their own *_kernel.cc files.
#include "custom_ops/core/bconv2d.h"
#include "custom_ops/core/bdepthwise.h"
#include "custom_ops/core/bmaxpool.h"
#include "custom_ops/core/types.h"
#include "tensorflow/core/framework/common_shape_fns.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace lowbit {

using TfStatus = tensorflow::Status;
using tensorflow::shape_inference::DimensionHandle;
using tensorflow::shape_inference::InferenceContext;
using tensorflow::shape_inference::ShapeHandle;

REGISTER_OP("LowbitBitpack")
    .Input("input: float")
    .Output("output: int32")
    .SetShapeFn([](InferenceContext* c) -> TfStatus {
      ShapeHandle in;
      TF_RETURN_IF_ERROR(c->WithRankAtLeast(c->input(0), 1, &in));
      DimensionHandle channels = c->Dim(in, -1);
      DimensionHandle words = c->UnknownDim();
      if (c->ValueKnown(channels)) words = c->MakeDim(PackedWords(c->Value(channels)));
      ShapeHandle out;
      TF_RETURN_IF_ERROR(c->ReplaceDim(in, -1, words, &out));
      c->set_output(0, out);
      return TfStatus();
    })
    .Doc(R"doc(
Packs the signs of `input` along its last axis into 32-bit words.

Bit c of word c / 32 is 1 exactly when input[..., c] < 0 (value -1); x >= 0,
-0.0 and NaN give 0 (value +1). Channels are padded with 0 bits to a whole word.
output: shape input.shape[:-1] + [ceil(C / 32)].
)doc");

REGISTER_OP("LowbitBconv2d")
    .Input("input: T")
    .Input("filter: int32")
    .Input("multiplier: float")
    .Input("bias: float")
    .Output("output: Tout")
    .Attr("T: {float, int32}")
    .Attr("Tout: {float, int32} = DT_FLOAT")
    .Attr("channels_in: int >= 1")
    .Attr("kernel_h: int >= 1")
    .Attr("kernel_w: int >= 1")
    .Attr("stride_h: int >= 1 = 1")
    .Attr("stride_w: int >= 1 = 1")
    .Attr("dilation_h: int >= 1 = 1")
    .Attr("dilation_w: int >= 1 = 1")
    .Attr("padding: {'SAME', 'VALID'} = 'VALID'")
    .Attr("pad_value: int = 0")
    .Attr("activation: {'NONE', 'RELU'} = 'NONE'")
    .Attr("output_type: {'float', 'bitpacked'} = 'float'")
    .SetShapeFn([](InferenceContext* c) -> TfStatus {
      ShapeHandle input, filter, vec;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &input));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 2, &filter));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 1, &vec));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(3), 1, &vec));
      BConv2DParams p;
      std::string padding;
      TF_RETURN_IF_ERROR(c->GetAttr("channels_in", &p.channels_in));
      TF_RETURN_IF_ERROR(c->GetAttr("kernel_h", &p.kernel_h));
      TF_RETURN_IF_ERROR(c->GetAttr("kernel_w", &p.kernel_w));
      TF_RETURN_IF_ERROR(c->GetAttr("stride_h", &p.stride_h));
      TF_RETURN_IF_ERROR(c->GetAttr("stride_w", &p.stride_w));
      TF_RETURN_IF_ERROR(c->GetAttr("dilation_h", &p.dilation_h));
      TF_RETURN_IF_ERROR(c->GetAttr("dilation_w", &p.dilation_w));
      TF_RETURN_IF_ERROR(c->GetAttr("padding", &padding));
      ParsePadding(padding, &p.padding);
      DimensionHandle out_h = c->UnknownDim(), out_w = c->UnknownDim();
      const DimensionHandle in_h = c->Dim(input, 1), in_w = c->Dim(input, 2);
      if (c->ValueKnown(in_h) && c->ValueKnown(in_w)) {
        p.batch = 1;
        p.out_channels = 1;
        p.in_h = c->Value(in_h);
        p.in_w = c->Value(in_w);
        const lowbit::Status geometry = ComputeBConv2DGeometry(&p);
        if (!geometry.ok) return tensorflow::errors::InvalidArgument("LowbitBconv2d: ", geometry.message);
        out_h = c->MakeDim(p.out_h);
        out_w = c->MakeDim(p.out_w);
      }
      std::string output_type;
      TF_RETURN_IF_ERROR(c->GetAttr("output_type", &output_type));
      DimensionHandle depth = c->Dim(filter, 0);
      if (output_type == "bitpacked") {
        depth = c->ValueKnown(depth) ? c->MakeDim(PackedWords(c->Value(depth))) : c->UnknownDim();
      }
      c->set_output(0, c->MakeShape({c->Dim(input, 0), out_h, out_w, depth}));
      return TfStatus();
    })
    .Doc(R"doc(
Binary 2-D convolution of a bit-packed (or float, packed on the fly) NHWC input
with a bit-packed filter, followed by y = multiplier * dot + bias and an
optional fused ReLU. See docs/custom_ops.md for the exact semantics.

input: float32 [N, H, W, channels_in] or int32 packed [N, H, W, ceil(channels_in / 32)].
filter: int32 [C_out, ceil(kernel_h * kernel_w * channels_in / 32)], the bit-packing
  of the flattened OHWI kernel (compact: one bit per weight).
multiplier: float32 [C_out].
bias: float32 [C_out].
output_type: "float": output float32 [N, OH, OW, C_out]; "bitpacked": the signs of
  that output packed, int32 [N, OH, OW, ceil(C_out / 32)], computed from the integer
  dot product with exact per-channel thresholds (Tout must be int32).
output: float32 [N, OH, OW, C_out], or int32 packed [N, OH, OW, ceil(C_out / 32)].
)doc");

REGISTER_OP("LowbitBDepthwiseConv2d")
    .Input("input: T")
    .Input("filter: int32")
    .Input("multiplier: float")
    .Input("bias: float")
    .Output("output: Tout")
    .Attr("T: {float, int32}")
    .Attr("Tout: {float, int32} = DT_FLOAT")
    .Attr("channels_in: int >= 1")
    .Attr("depth_multiplier: int >= 1 = 1")
    .Attr("kernel_h: int >= 1")
    .Attr("kernel_w: int >= 1")
    .Attr("stride_h: int >= 1 = 1")
    .Attr("stride_w: int >= 1 = 1")
    .Attr("dilation_h: int >= 1 = 1")
    .Attr("dilation_w: int >= 1 = 1")
    .Attr("padding: {'SAME', 'VALID'} = 'VALID'")
    .Attr("pad_value: int = 0")
    .Attr("activation: {'NONE', 'RELU'} = 'NONE'")
    .Attr("output_type: {'float', 'bitpacked'} = 'float'")
    .SetShapeFn([](InferenceContext* c) -> TfStatus {
      ShapeHandle input, filter, vec;
      TF_RETURN_IF_ERROR(c->WithRankAtLeast(c->input(0), 4, &input));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 3, &filter));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 1, &vec));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(3), 1, &vec));
      BDepthwiseConv2DParams p;
      std::string padding, output_type;
      TF_RETURN_IF_ERROR(c->GetAttr("channels_in", &p.channels_in));
      TF_RETURN_IF_ERROR(c->GetAttr("depth_multiplier", &p.depth_multiplier));
      TF_RETURN_IF_ERROR(c->GetAttr("kernel_h", &p.kernel_h));
      TF_RETURN_IF_ERROR(c->GetAttr("kernel_w", &p.kernel_w));
      TF_RETURN_IF_ERROR(c->GetAttr("stride_h", &p.stride_h));
      TF_RETURN_IF_ERROR(c->GetAttr("stride_w", &p.stride_w));
      TF_RETURN_IF_ERROR(c->GetAttr("dilation_h", &p.dilation_h));
      TF_RETURN_IF_ERROR(c->GetAttr("dilation_w", &p.dilation_w));
      TF_RETURN_IF_ERROR(c->GetAttr("padding", &padding));
      TF_RETURN_IF_ERROR(c->GetAttr("output_type", &output_type));
      ParsePadding(padding, &p.padding);
      const lowbit::Status options = CheckBDepthwiseConv2DOptions(p);
      if (!options.ok) {
        return tensorflow::errors::InvalidArgument("LowbitBDepthwiseConv2d: ", options.message);
      }
      if (!c->RankKnown(input)) {
        c->set_output(0, c->UnknownShape());
        return TfStatus();
      }
      // [..., H, W, depth] -> [..., OH, OW, out depth]; the leading dimensions
      // are a batch.
      const int rank = c->Rank(input);
      DimensionHandle out_h = c->UnknownDim(), out_w = c->UnknownDim();
      const DimensionHandle in_h = c->Dim(input, rank - 3), in_w = c->Dim(input, rank - 2);
      if (c->ValueKnown(in_h) && c->ValueKnown(in_w)) {
        p.batch = 1;
        p.in_h = c->Value(in_h);
        p.in_w = c->Value(in_w);
        const lowbit::Status geometry = ComputeBDepthwiseConv2DGeometry(&p);
        if (!geometry.ok) {
          return tensorflow::errors::InvalidArgument("LowbitBDepthwiseConv2d: ", geometry.message);
        }
        out_h = c->MakeDim(p.out_h);
        out_w = c->MakeDim(p.out_w);
      }
      const std::int64_t depth =
          output_type == "bitpacked" ? p.out_words() : p.out_channels();
      ShapeHandle leading, out;
      TF_RETURN_IF_ERROR(c->Subshape(input, 0, rank - 3, &leading));
      TF_RETURN_IF_ERROR(c->Concatenate(
          leading, c->MakeShape({out_h, out_w, c->MakeDim(depth)}), &out));
      c->set_output(0, out);
      return TfStatus();
    })
    .Doc(R"doc(
Binary depthwise 2-D convolution of a bit-packed (or float, packed on the fly)
NHWC input with a bit-packed filter, followed by y = multiplier * dot + bias and
an optional fused ReLU. Output channel o = c * depth_multiplier + j reads input
channel c. See docs/custom_ops.md for the exact semantics.

input: float32 [..., H, W, channels_in] or int32 packed [..., H, W, ceil(channels_in / 32)];
  the leading dimensions (at least one) are a batch.
filter: int32 [kernel_h, kernel_w, ceil(channels_in * depth_multiplier / 32)], the
  Keras depthwise kernel [KH, KW, C, DM] flattened to [KH, KW, C * DM] and bit-packed
  along the last axis.
multiplier: float32 [channels_in * depth_multiplier].
bias: float32 [channels_in * depth_multiplier].
output_type: "float": output float32 [..., OH, OW, C * DM]; "bitpacked": the signs of
  that output packed, int32 [..., OH, OW, ceil(C * DM / 32)], computed from the integer
  dot product with exact per-channel thresholds (Tout must be int32).
output: float32 [..., OH, OW, C * DM], or int32 packed [..., OH, OW, ceil(C * DM / 32)].
)doc");

REGISTER_OP("LowbitBMaxPool2d")
    .Input("input: int32")
    .Output("output: int32")
    .Attr("channels: int >= 1")
    .Attr("filter_h: int >= 1")
    .Attr("filter_w: int >= 1")
    .Attr("stride_h: int >= 1 = 1")
    .Attr("stride_w: int >= 1 = 1")
    .Attr("padding: {'SAME', 'VALID'} = 'VALID'")
    .SetShapeFn([](InferenceContext* c) -> TfStatus {
      ShapeHandle input;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &input));
      BMaxPool2DParams p;
      std::string padding;
      TF_RETURN_IF_ERROR(c->GetAttr("channels", &p.channels));
      TF_RETURN_IF_ERROR(c->GetAttr("filter_h", &p.filter_h));
      TF_RETURN_IF_ERROR(c->GetAttr("filter_w", &p.filter_w));
      TF_RETURN_IF_ERROR(c->GetAttr("stride_h", &p.stride_h));
      TF_RETURN_IF_ERROR(c->GetAttr("stride_w", &p.stride_w));
      TF_RETURN_IF_ERROR(c->GetAttr("padding", &padding));
      ParsePadding(padding, &p.padding);
      DimensionHandle out_h = c->UnknownDim(), out_w = c->UnknownDim();
      const DimensionHandle in_h = c->Dim(input, 1), in_w = c->Dim(input, 2);
      if (c->ValueKnown(in_h) && c->ValueKnown(in_w)) {
        p.batch = 1;
        p.in_h = c->Value(in_h);
        p.in_w = c->Value(in_w);
        const lowbit::Status geometry = ComputeBMaxPool2DGeometry(&p);
        if (!geometry.ok) {
          return tensorflow::errors::InvalidArgument("LowbitBMaxPool2d: ", geometry.message);
        }
        out_h = c->MakeDim(p.out_h);
        out_w = c->MakeDim(p.out_w);
      }
      c->set_output(0, c->MakeShape({c->Dim(input, 0), out_h, out_w,
                                     c->MakeDim(PackedWords(p.channels))}));
      return TfStatus();
    })
    .Doc(R"doc(
Max-pooling of bit-packed +-1 values (bit 1 = -1): the pooled bit is the AND of
the window's bits; SAME padding is ignored. See docs/custom_ops.md.

input: int32 packed [N, H, W, ceil(channels / 32)].
output: int32 packed [N, OH, OW, ceil(channels / 32)].
)doc");

}  // namespace lowbit
