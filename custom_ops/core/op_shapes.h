// The shape checks of the ops' tensors against their options, once for both
// shells: the TF kernel's Compute and the TFLite op's Prepare hand the core
// the shapes they see and get back the checked geometry and the output's
// shape. What stays in the shells is what only one of them has: dtypes (TF's
// OpDef fixes them; TFLite checks its tensor types), TFLite's int-sized
// dimensions and byte counts, TF's tensor allocation.
// Messages carry no op name (each shell prefixes its own).
#ifndef LOWBIT_CORE_OP_SHAPES_H_
#define LOWBIT_CORE_OP_SHAPES_H_

#include <cstdint>
#include <string>
#include <vector>

#include "custom_ops/core/bconv2d.h"
#include "custom_ops/core/bconv2d_bitpacked.h"
#include "custom_ops/core/bdepthwise.h"
#include "custom_ops/core/bgemm.h"
#include "custom_ops/core/bmaxpool.h"
#include "custom_ops/core/fastfood.h"
#include "custom_ops/core/multibit_conv2d.h"
#include "custom_ops/core/types.h"

namespace lowbit {

// A tensor's shape as a shell sees it (TF's int64 dimensions, TFLite's int).
struct Shape {
  std::vector<std::int64_t> dims;

  template <typename Int>
  static Shape Of(const Int* dims, int rank) {
    return Shape{std::vector<std::int64_t>(dims, dims + rank)};
  }
  int rank() const { return static_cast<int>(dims.size()); }
  std::string ToString() const;  // "[1, 5, 5, 33]"
};

// LowbitBconv2d (options in `params`, which passed CheckBConv2DOptions):
//   input      [..., H, W, channels_in] float, or [..., H, W, words] packed
//              (`packed_input`), rank >= 4, its leading dimensions the batch;
//   filter     packed [C_out, CompactFilterWords], or (`float_filter`, the TF
//              op only) the HWIO kernel [kernel_h, kernel_w, channels_in, C_out];
//   multiplier, bias [C_out].
// Sets params->batch (the product of the leading dimensions, possibly 0),
// in_h, in_w, out_channels and the geometry (ComputeBConv2DGeometry), and
// *output to the output's shape: the input's, with [OH, OW, C_out], or
// ceil(C_out / 32) words for a bit-packed output.
Status CheckBConv2DShapes(const Shape& input, bool packed_input, const Shape& filter,
                          bool float_filter, const Shape& multiplier, const Shape& bias,
                          OutputType output_type, BConv2DParams* params, Shape* output);

// LowbitBgemm (options in `params`, which passed CheckBGemmOptions):
//   input      [..., channels_in] float, or [..., words] packed (`packed_input`),
//              rank >= 1, its leading dimensions the rows;
//   filter     packed [N_out, PackedWords(channels_in)], or (`float_filter`,
//              the TF op only) the Keras kernel [channels_in, N_out];
//   multiplier, bias [N_out].
// Sets params->rows (possibly 0) and out_channels (CheckBGemmShape), and
// *output to the input's shape with N_out, or ceil(N_out / 32) words for a
// bit-packed output, as its last dimension.
Status CheckBGemmShapes(const Shape& input, bool packed_input, const Shape& filter,
                        bool float_filter, const Shape& multiplier, const Shape& bias,
                        OutputType output_type, BGemmParams* params, Shape* output);

// LowbitBMaxPool2d (options in `params`, which passed
// CheckBMaxPool2DOptions): input packed [..., H, W, PackedWords(channels)],
// rank >= 4, its leading dimensions the batch. Sets params->batch (possibly
// 0), in_h, in_w and the geometry (ComputeBMaxPool2DGeometry), and *output to
// the input's shape with [OH, OW, words].
Status CheckBMaxPool2DShapes(const Shape& input, BMaxPool2DParams* params, Shape* output);

// LowbitBDepthwiseConv2d (options in `params`, which passed
// CheckBDepthwiseConv2DOptions):
//   input      [..., H, W, channels_in] float, or [..., H, W, words] packed
//              (`packed_input`), rank >= 4, its leading dimensions the batch;
//   filter     packed [kernel_h, kernel_w, PackedWords(channels_in * depth_multiplier)];
//   multiplier, bias [channels_in * depth_multiplier].
// Sets params->batch (possibly 0), in_h, in_w and the geometry
// (ComputeBDepthwiseConv2DGeometry), and *output to the output's shape.
Status CheckBDepthwiseConv2DShapes(const Shape& input, bool packed_input, const Shape& filter,
                                   const Shape& multiplier, const Shape& bias,
                                   OutputType output_type, BDepthwiseConv2DParams* params,
                                   Shape* output);

// LowbitMultibitConv2d (options in `params`, read by ReadMultibitConv2DOptions):
//   input   [..., H, W, channels_in] (float or int8), or [..., H, W, words]
//           packed (`packed_input`, activation mode "sign" only), rank >= 4,
//           its leading dimensions the batch;
//   filter  [M, C_out, CompactFilterWords]; alphas [M, C_out]; shifts [N];
//   betas   [P] (P = activation_planes()); bias [C_out].
// Sets params->weight_planes, num_shifts and the conv's batch (possibly 0),
// in_h, in_w, out_channels and geometry (ComputeMultibitConv2DGeometry), and
// *output to the input's shape with [OH, OW, C_out], or ceil(C_out / 32)
// words for a bit-packed output.
Status CheckMultibitConv2DShapes(const Shape& input, bool packed_input, const Shape& filter,
                                 const Shape& alphas, const Shape& shifts, const Shape& betas,
                                 const Shape& bias, OutputType output_type,
                                 MultibitConv2DParams* params, Shape* output);

// LowbitFastfood (units and activation in `params`): x [..., d], rank >= 1,
// its leading dimensions the rows; b, g, s and permutation [k, n]; bias
// [units] or [0]. Sets params->rows (possibly 0), input_dim, blocks and
// block_size (CheckFastfoodParams), and *output to x's shape with units as
// its last dimension. (The permutation's values are CheckFastfoodPermutation's.)
Status CheckFastfoodShapes(const Shape& x, const Shape& b, const Shape& g, const Shape& s,
                           const Shape& permutation, const Shape& bias, FastfoodParams* params,
                           Shape* output);

}  // namespace lowbit

#endif  // LOWBIT_CORE_OP_SHAPES_H_
