// Each op's options, read once for both shells: the values come from an
// OptionSource (the TF attributes of a node, or a TFLite op's FlexBuffer
// custom_options), are validated against the op's entry of the contract table
// by contract::ReadOptions (presence, type, range, choices, defaults), mapped
// to the op's params here, and checked by the op's own Check*Options (the
// constraints between options). The TF kernels, the TF shape functions and
// the TFLite op factories all call these; none of them reads or checks an
// option by hand. Messages carry no op name (each shell prefixes its own).
#ifndef LOWBIT_CORE_OP_OPTIONS_H_
#define LOWBIT_CORE_OP_OPTIONS_H_

#include <cstdint>

#include "custom_ops/core/bconv2d.h"
#include "custom_ops/core/bconv2d_bitpacked.h"
#include "custom_ops/core/bdepthwise.h"
#include "custom_ops/core/bgemm.h"
#include "custom_ops/core/bmaxpool.h"
#include "custom_ops/core/multibit_conv2d.h"
#include "custom_ops/core/op_contract.h"
#include "custom_ops/core/types.h"

namespace lowbit {

// LowbitBconv2d: the conv options, output_type and epilogue (an epilogue
// with inputs needs a float output).
Status ReadBConv2DOptions(const contract::OptionSource& source, BConv2DParams* params,
                          OutputType* output_type, EpilogueKind* epilogue);
// LowbitBgemm: channels_in, activation, output_type.
Status ReadBGemmOptions(const contract::OptionSource& source, BGemmParams* params,
                        OutputType* output_type);
// LowbitBMaxPool2d: channels, filter and stride sizes, padding.
Status ReadBMaxPool2DOptions(const contract::OptionSource& source, BMaxPool2DParams* params);
// LowbitBDepthwiseConv2d: the conv options, depth_multiplier, output_type.
Status ReadBDepthwiseConv2DOptions(const contract::OptionSource& source,
                                   BDepthwiseConv2DParams* params, OutputType* output_type);
// LowbitMultibitConv2d: the conv options, activation_mode and activation_bits
// (checked with CheckMultibitConv2DOptions as far as they go without the
// tensors: the shift count is the `shifts` input's length, so num_shifts is
// left 0), output_type.
Status ReadMultibitConv2DOptions(const contract::OptionSource& source,
                                 MultibitConv2DParams* params, OutputType* output_type);
// LowbitFastfood: units, activation (units <= k * n is a shape check) and
// output_type ("float" or "int8").
Status ReadFastfoodOptions(const contract::OptionSource& source, std::int64_t* units,
                           Activation* activation, OutputType* output_type);

}  // namespace lowbit

#endif  // LOWBIT_CORE_OP_OPTIONS_H_
