// Registrations (signatures, attributes, shape functions) of the lowbit TF ops.
// The kernels live in the *_kernel.cc files beside this one. The inputs,
// outputs and attributes of the ops that a .tflite file carries come from the
// op contract table (core/op_contract.h); their shape functions and doc text
// are written here.
#include <string>

#include "custom_ops/core/bconv2d.h"
#include "custom_ops/core/bdepthwise.h"
#include "custom_ops/core/bmaxpool.h"
#include "custom_ops/core/op_contract.h"
#include "custom_ops/core/op_options.h"
#include "custom_ops/core/types.h"
#include "custom_ops/tf/attr_source.h"
#include "custom_ops/tf/binary_kernel_util.h"  // ToTf
#include "tensorflow/core/framework/common_shape_fns.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace lowbit {

using TfStatus = tensorflow::Status;
using tensorflow::shape_inference::DimensionHandle;
using tensorflow::shape_inference::InferenceContext;
using tensorflow::shape_inference::ShapeHandle;

namespace {

// Output height and width of a conv op (unknown when the input's are).
TfStatus ConvOutputSize(InferenceContext* c, const char* op, DimensionHandle in_h,
                        DimensionHandle in_w, BConv2DParams* p, DimensionHandle* out_h,
                        DimensionHandle* out_w) {
  *out_h = c->UnknownDim();
  *out_w = c->UnknownDim();
  if (!c->ValueKnown(in_h) || !c->ValueKnown(in_w)) return TfStatus();
  p->batch = 1;
  p->out_channels = 1;
  p->in_h = c->Value(in_h);
  p->in_w = c->Value(in_w);
  const lowbit::Status geometry = ComputeBConv2DGeometry(p);
  if (!geometry.ok) return tensorflow::errors::InvalidArgument(op, ": ", geometry.message);
  *out_h = c->MakeDim(p->out_h);
  *out_w = c->MakeDim(p->out_w);
  return TfStatus();
}

// Output shape of the 2-D window ops on [..., H, W, C]: the leading
// dimensions (flattened into the batch by the kernels) are kept.
TfStatus WindowOutputShape(InferenceContext* c, ShapeHandle input, DimensionHandle out_h,
                           DimensionHandle out_w, DimensionHandle depth, ShapeHandle* out) {
  ShapeHandle leading;
  TF_RETURN_IF_ERROR(c->Subshape(input, 0, -3, &leading));
  return c->Concatenate(leading, c->MakeShape({out_h, out_w, depth}), out);
}

// LowbitBconv2d's epilogue inputs (after bias, input 4 on): their count and
// shapes against the `epilogue` attribute (read and checked against
// output_type by ReadBConv2DOptions); the residual refines the output shape
// it must equal.
TfStatus EpilogueShapes(InferenceContext* c, const EpilogueKind& kind, DimensionHandle depth,
                        ShapeHandle* out) {
  const int given = c->num_inputs() - 4;
  if (given != kind.inputs()) {
    std::string text;
    TF_RETURN_IF_ERROR(c->GetAttr("epilogue", &text));
    return tensorflow::errors::InvalidArgument("LowbitBconv2d: epilogue \"", text, "\" takes ",
                                               kind.inputs(), " epilogue inputs, got ", given);
  }
  int next = 4;
  if (kind.affine) {
    for (int i = 0; i < 2; ++i, ++next) {
      ShapeHandle vec;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(next), 1, &vec));
      DimensionHandle merged;
      TF_RETURN_IF_ERROR(c->Merge(c->Dim(vec, 0), depth, &merged));
    }
  }
  if (kind.add) TF_RETURN_IF_ERROR(c->Merge(*out, c->input(next), out));
  return TfStatus();
}

// The REGISTER_OP builder of an op of the contract table, with its inputs,
// outputs and attributes in the table's order (the order of the OpDef's
// fields, which tests/core/test_op_contract.py holds to the recorded OpDefs).
tensorflow::register_op::OpDefBuilderWrapper ContractOp(const char* name) {
  const contract::OpContract* op = contract::FindOpContract(name);
  tensorflow::register_op::OpDefBuilderWrapper builder(name);
  for (int i = 0; i < op->num_inputs; ++i) builder.Input(contract::TfArgSpec(op->inputs[i]));
  for (int i = 0; i < op->num_outputs; ++i) builder.Output(contract::TfArgSpec(op->outputs[i]));
  for (int i = 0; i < op->num_options; ++i) builder.Attr(contract::TfAttrSpec(op->options[i]));
  return builder;
}

}  // namespace

// REGISTER_OP(name) with the signature from the contract table: a static
// initializer, as REGISTER_OP's own, run when the library is loaded.
#define LOWBIT_REGISTER_CONTRACT_OP(var, name)                                   \
  static const tensorflow::InitOnStartupMarker var TF_ATTRIBUTE_UNUSED =        \
      tensorflow::InitOnStartupMarker{} << ContractOp(name)

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

LOWBIT_REGISTER_CONTRACT_OP(kRegisterBconv2d, "LowbitBconv2d")
    .SetShapeFn([](InferenceContext* c) -> TfStatus {
      ShapeHandle input, filter, vec;
      tensorflow::DataType filter_type;
      TF_RETURN_IF_ERROR(c->GetAttr("Tfilter", &filter_type));
      const bool float_filter = filter_type == tensorflow::DT_FLOAT;
      TF_RETURN_IF_ERROR(c->WithRankAtLeast(c->input(0), 4, &input));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), float_filter ? 4 : 2, &filter));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 1, &vec));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(3), 1, &vec));
      BConv2DParams p;
      OutputType output_type;
      EpilogueKind epilogue;
      TF_RETURN_IF_ERROR(ToTf("LowbitBconv2d", ReadBConv2DOptions(TfAttrSource(c), &p,
                                                                  &output_type, &epilogue)));
      DimensionHandle out_h, out_w;
      TF_RETURN_IF_ERROR(ConvOutputSize(c, "LowbitBconv2d", c->Dim(input, -3), c->Dim(input, -2),
                                        &p, &out_h, &out_w));
      // C_out: filter [C_out, words], or the HWIO kernel's last dimension.
      DimensionHandle depth = c->Dim(filter, float_filter ? 3 : 0);
      if (output_type == OutputType::kBitpacked) {
        depth = c->ValueKnown(depth) ? c->MakeDim(PackedWords(c->Value(depth))) : c->UnknownDim();
      }
      ShapeHandle out;
      TF_RETURN_IF_ERROR(WindowOutputShape(c, input, out_h, out_w, depth, &out));
      TF_RETURN_IF_ERROR(EpilogueShapes(c, epilogue, depth, &out));
      c->set_output(0, out);
      return TfStatus();
    })
    .Doc(R"doc(
Binary 2-D convolution of a bit-packed (or float, packed on the fly) NHWC input
with a bit-packed filter, followed by y = multiplier * dot + bias and an
optional fused ReLU. See docs/custom_ops.md for the exact semantics. Inputs of
rank > 4, [..., H, W, C], are a batch of images: the kernel slides over H and W,
the leading dimensions are kept.

input: float32 [..., H, W, channels_in] or int32 packed [..., H, W, ceil(channels_in / 32)].
filter: int32 [C_out, ceil(kernel_h * kernel_w * channels_in / 32)], the bit-packing
  of the flattened OHWI kernel (compact: one bit per weight); or (Tfilter = float,
  for training through the op, see lowbit_tf.ops) the float32 Keras HWIO kernel
  [kernel_h, kernel_w, channels_in, C_out], binarised and packed by the op.
multiplier: float32 [C_out].
bias: float32 [C_out].
output_type: "float": output float32 [..., OH, OW, C_out]; "bitpacked": the signs of
  that output packed, int32 [..., OH, OW, ceil(C_out / 32)], computed from the integer
  dot product with exact per-channel thresholds (Tout must be int32).
epilogue: what follows the transform of a float output, fused: "affine" then
  y = y * post_multiplier + post_bias (a BatchNormalization after the ReLU), "add"
  then y = y + residual (a residual Add), "affine_add" both in that order.
epilogue_inputs: post_multiplier [C_out] and post_bias [C_out] for "affine",
  residual (the output's shape) for "add", all three for "affine_add"; none for "none".
output: float32 [..., OH, OW, C_out], or int32 packed [..., OH, OW, ceil(C_out / 32)].
)doc");

LOWBIT_REGISTER_CONTRACT_OP(kRegisterBgemm, "LowbitBgemm")
    .SetShapeFn([](InferenceContext* c) -> TfStatus {
      ShapeHandle input, filter, vec;
      tensorflow::DataType filter_type;
      TF_RETURN_IF_ERROR(c->GetAttr("Tfilter", &filter_type));
      TF_RETURN_IF_ERROR(c->WithRankAtLeast(c->input(0), 1, &input));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 2, &filter));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 1, &vec));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(3), 1, &vec));
      BGemmParams p;
      OutputType output_type;
      TF_RETURN_IF_ERROR(
          ToTf("LowbitBgemm", ReadBGemmOptions(TfAttrSource(c), &p, &output_type)));
      // N_out: filter [N_out, words], or the Keras kernel [K, N_out].
      DimensionHandle depth = c->Dim(filter, filter_type == tensorflow::DT_FLOAT ? 1 : 0);
      if (output_type == OutputType::kBitpacked) {
        depth = c->ValueKnown(depth) ? c->MakeDim(PackedWords(c->Value(depth))) : c->UnknownDim();
      }
      ShapeHandle out;
      TF_RETURN_IF_ERROR(c->ReplaceDim(input, -1, depth, &out));
      c->set_output(0, out);
      return TfStatus();
    })
    .Doc(R"doc(
Binary dense layer (GEMM) over the last axis: for every row x of the input
(leading dimensions kept) and output channel c,
y[c] = multiplier[c] * dot(sign(x), w[c]) + bias[c], optionally ReLU-ed, with
dot = K - 2 * popcount(x XOR w[c]). See docs/custom_ops.md.

input: float32 [..., channels_in] or int32 packed [..., ceil(channels_in / 32)].
filter: int32 [N_out, ceil(channels_in / 32)], the bit-packing of the transposed
  Keras kernel; or (Tfilter = float) the float32 Keras kernel [channels_in, N_out],
  binarised and packed by the op.
multiplier: float32 [N_out].
bias: float32 [N_out].
output_type: "float": output float32 [..., N_out]; "bitpacked": the signs of that
  output packed, int32 [..., ceil(N_out / 32)] (Tout must be int32).
output: float32 [..., N_out], or int32 packed [..., ceil(N_out / 32)].
)doc");

LOWBIT_REGISTER_CONTRACT_OP(kRegisterBMaxPool2d, "LowbitBMaxPool2d")
    .SetShapeFn([](InferenceContext* c) -> TfStatus {
      ShapeHandle input;
      TF_RETURN_IF_ERROR(c->WithRankAtLeast(c->input(0), 4, &input));
      BMaxPool2DParams p;
      TF_RETURN_IF_ERROR(
          ToTf("LowbitBMaxPool2d", ReadBMaxPool2DOptions(TfAttrSource(c), &p)));
      DimensionHandle out_h = c->UnknownDim(), out_w = c->UnknownDim();
      const DimensionHandle in_h = c->Dim(input, -3), in_w = c->Dim(input, -2);
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
      ShapeHandle out;
      TF_RETURN_IF_ERROR(
          WindowOutputShape(c, input, out_h, out_w, c->MakeDim(PackedWords(p.channels)), &out));
      c->set_output(0, out);
      return TfStatus();
    })
    .Doc(R"doc(
Max-pooling of bit-packed +-1 values (bit 1 = -1): the pooled bit is the AND of
the window's bits; SAME padding is ignored. See docs/custom_ops.md. Inputs of
rank > 4 are a batch of images: the window slides over the last two spatial
dimensions, the leading dimensions are kept.

input: int32 packed [..., H, W, ceil(channels / 32)].
output: int32 packed [..., OH, OW, ceil(channels / 32)].
)doc");

LOWBIT_REGISTER_CONTRACT_OP(kRegisterMultibitConv2d, "LowbitMultibitConv2d")
    .SetShapeFn([](InferenceContext* c) -> TfStatus {
      ShapeHandle input, filter, matrix, vec;
      TF_RETURN_IF_ERROR(c->WithRankAtLeast(c->input(0), 4, &input));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 3, &filter));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 2, &matrix));
      for (int i = 3; i < 6; ++i) TF_RETURN_IF_ERROR(c->WithRank(c->input(i), 1, &vec));
      MultibitConv2DParams p;
      OutputType output_type;
      TF_RETURN_IF_ERROR(ToTf("LowbitMultibitConv2d",
                              ReadMultibitConv2DOptions(TfAttrSource(c), &p, &output_type)));
      DimensionHandle out_h, out_w;
      TF_RETURN_IF_ERROR(ConvOutputSize(c, "LowbitMultibitConv2d", c->Dim(input, -3),
                                        c->Dim(input, -2), &p.conv, &out_h, &out_w));
      DimensionHandle depth = c->Dim(filter, 1);
      if (output_type == OutputType::kBitpacked) {
        depth = c->ValueKnown(depth) ? c->MakeDim(PackedWords(c->Value(depth))) : c->UnknownDim();
      }
      ShapeHandle out;
      TF_RETURN_IF_ERROR(WindowOutputShape(c, input, out_h, out_w, depth, &out));
      c->set_output(0, out);
      return TfStatus();
    })
    .Doc(R"doc(
Multi-bit 2-D convolution as a sum of binary convolutions (ABC-Net, DoReFa-Net,
ternary / k-bit weights): with weights sum_m alphas[m, c] B_m and activations
sum_p betas[p] H_p (planes of +-1 values),
  y[c] = sum_p betas[p] * (sum_m alphas[m, c] * dot(H_p, B_m[c])) + bias[c]
then an optional fused ReLU. See core/multibit_conv2d.h and docs/custom_ops.md.

input: float32 [..., H, W, channels_in]; leading dimensions are shared. Or int8
  codes of the same shape (T = int8): the planes of the real values
  input_scale * (q - input_zero_point) (float32), as the float input would give.
  Or, activation_mode "sign" only, int32 packed [..., H, W, ceil(channels_in / 32)]
  (T = int32): the one plane as it is.
filter: int32 [M, C_out, ceil(kernel_h * kernel_w * channels_in / 32)], each
  weight plane packed like LowbitBconv2d's filter.
alphas: float32 [M, C_out].
shifts: float32 [N], activation_mode "abc": plane p is +1 where
  input + shifts[p] >= 0.5. Empty for the other modes.
betas: float32 [P]: P = 1 ("sign"), N ("abc"), activation_bits + 1 ("dorefa":
  the bits of round(clip(x, 0, 1) * (2^k - 1)), then a constant +1 plane).
bias: float32 [C_out].
output_type: "float" (Tout float32); "int8" (Tout int8): y quantized with
  output_scale and output_zero_point as TFLite's QUANTIZE does; "bitpacked"
  (Tout int32): the signs of y packed, as the next binary layer would pack them.
output: float32 [..., OH, OW, C_out], int8 of that shape, or int32 packed
  [..., OH, OW, ceil(C_out / 32)].
)doc");

LOWBIT_REGISTER_CONTRACT_OP(kRegisterFastfood, "LowbitFastfood")
    .SetShapeFn([](InferenceContext* c) -> TfStatus {
      ShapeHandle x, diagonal, other, bias;
      TF_RETURN_IF_ERROR(c->WithRankAtLeast(c->input(0), 1, &x));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 2, &diagonal));
      for (int i = 2; i <= 4; ++i) {
        TF_RETURN_IF_ERROR(c->WithRank(c->input(i), 2, &other));
        TF_RETURN_IF_ERROR(c->Merge(diagonal, other, &diagonal));
      }
      TF_RETURN_IF_ERROR(c->WithRank(c->input(5), 1, &bias));
      std::int64_t units = 0;
      Activation activation;
      OutputType output_type;
      TF_RETURN_IF_ERROR(ToTf("LowbitFastfood", ReadFastfoodOptions(TfAttrSource(c), &units,
                                                                    &activation, &output_type)));
      const DimensionHandle k = c->Dim(diagonal, 0), n = c->Dim(diagonal, 1);
      if (c->ValueKnown(k) && c->ValueKnown(n) && units > c->Value(k) * c->Value(n)) {
        return tensorflow::errors::InvalidArgument(
            "LowbitFastfood: units = ", units, " must be <= k * n = ",
            c->Value(k) * c->Value(n));
      }
      ShapeHandle out;
      TF_RETURN_IF_ERROR(c->ReplaceDim(x, -1, c->MakeDim(units), &out));
      c->set_output(0, out);
      return TfStatus();
    })
    .Doc(R"doc(
Adaptive Fastfood transform (the forward pass of lowbit_tf.layers.FastfoodDense):
each row of x, zero-padded to n, goes through k blocks
V_b x = (1/n) S_b H G_b Pi_b H B_b x (H the Walsh-Hadamard matrix, Pi_b x =
x[permutation[b]]); the k * n results are concatenated, the first `units` kept,
the bias added and the activation applied. Computed in float32 in the Keras
layer's order of operations. See docs/custom_ops.md.

x: float32 [..., d], d <= n; the leading dimensions are kept. Or int8 codes of
  that shape (T = int8): the real values input_scale * (q - input_zero_point)
  (float32, as TFLite's DEQUANTIZE computes them).
b: float32 [k, n], the diagonal of B (n a power of two).
g: float32 [k, n], the diagonal of G.
s: float32 [k, n], the diagonal of S.
permutation: int32 [k, n], each row a permutation of [0, n).
bias: float32 [units], or [0] for no bias.
output_type: "float" (Tout float32); "int8" (Tout int8): the float output
  quantized with output_scale and output_zero_point, as LowbitBconv2d's.
output: float32 [..., units], or int8 of that shape.
)doc");

LOWBIT_REGISTER_CONTRACT_OP(kRegisterBDepthwiseConv2d, "LowbitBDepthwiseConv2d")
    .SetShapeFn([](InferenceContext* c) -> TfStatus {
      ShapeHandle input, filter, vec;
      TF_RETURN_IF_ERROR(c->WithRankAtLeast(c->input(0), 4, &input));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 3, &filter));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 1, &vec));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(3), 1, &vec));
      BDepthwiseConv2DParams p;
      OutputType output_type;
      TF_RETURN_IF_ERROR(ToTf("LowbitBDepthwiseConv2d",
                              ReadBDepthwiseConv2DOptions(TfAttrSource(c), &p, &output_type)));
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
          output_type == OutputType::kBitpacked ? p.out_words() : p.out_channels();
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

}  // namespace lowbit
