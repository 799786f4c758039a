#include "custom_ops/core/op_options.h"

namespace lowbit {
namespace {

// The values of `op`'s options from `source`, validated against the table.
Status Read(const char* op, const contract::OptionSource& source,
            contract::OptionValues* values) {
  return contract::ReadOptions(*contract::FindOpContract(op), source, values);
}

// The options the conv ops share, into the fields of the same names of
// BConv2DParams or BDepthwiseConv2DParams. The strings are among the table's
// choices, so the parsers cannot fail here.
template <typename Params>
void ConvOptions(const contract::OptionValues& v, Params* p) {
  p->channels_in = v.Int("channels_in");
  p->kernel_h = v.Int("kernel_h");
  p->kernel_w = v.Int("kernel_w");
  p->stride_h = v.Int("stride_h");
  p->stride_w = v.Int("stride_w");
  p->dilation_h = v.Int("dilation_h");
  p->dilation_w = v.Int("dilation_w");
  p->pad_value = static_cast<int>(v.Int("pad_value"));
  ParsePadding(v.String("padding"), &p->padding);
  ParseActivation(v.String("activation"), &p->activation);
}

}  // namespace

Status ReadBConv2DOptions(const contract::OptionSource& source, BConv2DParams* params,
                          OutputType* output_type, EpilogueKind* epilogue) {
  contract::OptionValues v;
  Status s = Read("LowbitBconv2d", source, &v);
  if (!s.ok) return s;
  ConvOptions(v, params);
  ParsePadding(v.String("padding"), &params->padding, /*allow_explicit=*/true);
  params->explicit_pads.top = v.Int("explicit_pad_top");
  params->explicit_pads.bottom = v.Int("explicit_pad_bottom");
  params->explicit_pads.left = v.Int("explicit_pad_left");
  params->explicit_pads.right = v.Int("explicit_pad_right");
  ParseOutputType(v.String("output_type"), output_type);
  ParseEpilogue(v.String("epilogue"), epilogue);
  epilogue->output_relu = v.String("output_activation") == "RELU";
  if (epilogue->output_relu && *output_type != OutputType::kInt8) {
    return Status::Error("output_activation \"RELU\" needs output_type \"int8\"");
  }
  if (epilogue->inputs() != 0 && *output_type == OutputType::kBitpacked) {
    return Status::Error("epilogue \"" + v.String("epilogue") +
                         "\" needs output_type \"float\" or \"int8\"");
  }
  return CheckBConv2DOptions(*params);
}

Status ReadBGemmOptions(const contract::OptionSource& source, BGemmParams* params,
                        OutputType* output_type) {
  contract::OptionValues v;
  Status s = Read("LowbitBgemm", source, &v);
  if (!s.ok) return s;
  params->channels_in = v.Int("channels_in");
  ParseActivation(v.String("activation"), &params->activation);
  ParseOutputType(v.String("output_type"), output_type);
  return CheckBGemmOptions(*params);
}

Status ReadBMaxPool2DOptions(const contract::OptionSource& source, BMaxPool2DParams* params) {
  contract::OptionValues v;
  Status s = Read("LowbitBMaxPool2d", source, &v);
  if (!s.ok) return s;
  params->channels = v.Int("channels");
  params->filter_h = v.Int("filter_h");
  params->filter_w = v.Int("filter_w");
  params->stride_h = v.Int("stride_h");
  params->stride_w = v.Int("stride_w");
  ParsePadding(v.String("padding"), &params->padding);
  return CheckBMaxPool2DOptions(*params);
}

Status ReadBDepthwiseConv2DOptions(const contract::OptionSource& source,
                                   BDepthwiseConv2DParams* params, OutputType* output_type) {
  contract::OptionValues v;
  Status s = Read("LowbitBDepthwiseConv2d", source, &v);
  if (!s.ok) return s;
  ConvOptions(v, params);
  params->depth_multiplier = v.Int("depth_multiplier");
  ParseOutputType(v.String("output_type"), output_type);
  return CheckBDepthwiseConv2DOptions(*params);
}

Status ReadMultibitConv2DOptions(const contract::OptionSource& source,
                                 MultibitConv2DParams* params, OutputType* output_type) {
  contract::OptionValues v;
  Status s = Read("LowbitMultibitConv2d", source, &v);
  if (!s.ok) return s;
  ConvOptions(v, &params->conv);
  ParseOutputType(v.String("output_type"), output_type);
  ParseActivationPlanes(v.String("activation_mode"), &params->activation_mode);
  params->activation_bits = v.Int("activation_bits");
  // The shift count is only known from the tensor: check the rest now.
  MultibitConv2DParams check = *params;
  check.num_shifts = check.activation_mode == ActivationPlanes::kAbc ? 1 : 0;
  return CheckMultibitConv2DOptions(check);
}

Status ReadFastfoodOptions(const contract::OptionSource& source, std::int64_t* units,
                           Activation* activation, OutputType* output_type) {
  contract::OptionValues v;
  Status s = Read("LowbitFastfood", source, &v);
  if (!s.ok) return s;
  *units = v.Int("units");
  ParseActivation(v.String("activation"), activation);
  ParseOutputType(v.String("output_type"), output_type);
  return Status::Ok();
}

}  // namespace lowbit
