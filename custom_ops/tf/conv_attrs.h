// Reading the attributes the conv ops share (LowbitBconv2d,
// LowbitBDepthwiseConv2d, LowbitMultibitConv2d), once for their shape
// functions (InferenceContext) and their kernels (OpKernelConstruction): both
// offer the same GetAttr.
#ifndef LOWBIT_TF_CONV_ATTRS_H_
#define LOWBIT_TF_CONV_ATTRS_H_

#include <string>

#include "custom_ops/core/bconv2d.h"
#include "tensorflow/core/framework/op_kernel.h"

namespace lowbit {

// channels_in, kernel_h/w, stride_h/w, dilation_h/w, pad_value, padding and
// activation into the fields of the same names of `params` (BConv2DParams or
// BDepthwiseConv2DParams). Range checks are the core's Check*Options.
template <typename Context, typename Params>
tensorflow::Status ReadConvAttrs(Context* c, const char* op, Params* params) {
  std::string padding, activation;
  TF_RETURN_IF_ERROR(c->GetAttr("channels_in", &params->channels_in));
  TF_RETURN_IF_ERROR(c->GetAttr("kernel_h", &params->kernel_h));
  TF_RETURN_IF_ERROR(c->GetAttr("kernel_w", &params->kernel_w));
  TF_RETURN_IF_ERROR(c->GetAttr("stride_h", &params->stride_h));
  TF_RETURN_IF_ERROR(c->GetAttr("stride_w", &params->stride_w));
  TF_RETURN_IF_ERROR(c->GetAttr("dilation_h", &params->dilation_h));
  TF_RETURN_IF_ERROR(c->GetAttr("dilation_w", &params->dilation_w));
  TF_RETURN_IF_ERROR(c->GetAttr("pad_value", &params->pad_value));
  TF_RETURN_IF_ERROR(c->GetAttr("padding", &padding));
  TF_RETURN_IF_ERROR(c->GetAttr("activation", &activation));
  lowbit::Status s = ParsePadding(padding, &params->padding);
  if (s.ok) s = ParseActivation(activation, &params->activation);
  if (!s.ok) return tensorflow::errors::InvalidArgument(op, ": ", s.message);
  return tensorflow::Status();
}

}  // namespace lowbit

#endif  // LOWBIT_TF_CONV_ATTRS_H_
