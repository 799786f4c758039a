// TF kernel of LowbitBDepthwiseConv2d: validates the tensors against the
// attributes, binarises a float input (inside the kernel where the core can,
// else packed first), flattens the leading dimensions
// of a [..., H, W, C] input into the batch, and runs the core's binary
// depthwise convolution on the layer's plan, kept across calls.
#include <memory>
#include <mutex>
#include <string>
#include <type_traits>
#include <vector>

#include "custom_ops/core/bconv2d_bitpacked.h"
#include "custom_ops/core/bdepthwise.h"
#include "custom_ops/core/bitpack.h"
#include "custom_ops/core/int8_io.h"
#include "custom_ops/core/op_options.h"
#include "custom_ops/core/op_shapes.h"
#include "custom_ops/tf/attr_source.h"
#include "custom_ops/tf/binary_kernel_util.h"
#include "custom_ops/tf/tf_executor.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"

namespace lowbit {

using tensorflow::errors::InvalidArgument;

constexpr char kDepthwiseOp[] = "LowbitBDepthwiseConv2d";

// The layer's plan (core/bdepthwise.h: its per-tap tables, the AVX-512
// kernel's filter rows and threshold tables, ...), kept across calls: building
// it costs about as much as a call of a small layer. TF may run one kernel
// object's Compute on several threads at once, so the plan is swapped under a
// lock and each call holds its own reference to an immutable one. It is
// reused while the kernel path, every params field (the batch too), the
// filter words and, for a bit-packed output, the thresholds are those it was
// built from. The filter is compared word for word on every call: KH * KW * C
// / 8 bytes (288 for 3x3x256), next to a convolution of microseconds, and
// right whatever feeds it (a constant, a variable assigned between calls, a
// NumPy array). The thresholds are compared by identity: ThresholdCache hands
// out the same immutable entry while the multiplier and bias values are
// unchanged (it compares them), and the reference kept here keeps that entry
// alive, so a new entry can never have the address of the one the plan used.
class PlanCache {
 public:
  std::shared_ptr<const BDepthwisePlan> Get(
      BConv2DKernel kernel, const BDepthwiseConv2DParams& params, const PackedWord* filter,
      std::shared_ptr<const ThresholdCache::Entry> thresholds) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (plan_ == nullptr || thresholds != thresholds_ ||
        !plan_->Matches(kernel, params, thresholds != nullptr) || !plan_->SameFilter(filter)) {
      auto fresh = std::make_shared<BDepthwisePlan>();
      fresh->Prepare(kernel, params, filter,
                     thresholds != nullptr ? thresholds->threshold.data() : nullptr,
                     thresholds != nullptr ? thresholds->flip.data() : nullptr);
      plan_ = std::move(fresh);
      thresholds_ = std::move(thresholds);
    }
    return plan_;
  }

 private:
  std::mutex mutex_;
  std::shared_ptr<const BDepthwisePlan> plan_;                // guarded by mutex_
  std::shared_ptr<const ThresholdCache::Entry> thresholds_;  // plan_'s; guarded by mutex_
};

template <typename T>
class BDepthwiseConv2DOp : public tensorflow::OpKernel {
 public:
  explicit BDepthwiseConv2DOp(tensorflow::OpKernelConstruction* ctx)
      : OpKernel(ctx), kernel_(SelectBConv2DKernel()) {
    OP_REQUIRES_OK(ctx, ToTf(ReadBDepthwiseConv2DOptions(TfAttrSource(ctx), &params_,
                                                         &output_type_)));
    OP_REQUIRES_OK(ctx, CheckToutAttr(ctx, kDepthwiseOp, output_type_));
    OP_REQUIRES_OK(ctx, ReadInt8Attrs(ctx, kDepthwiseOp, &int8_));
  }

  void Compute(tensorflow::OpKernelContext* ctx) override {
    IeeeSubnormals ieee;  // the TFLite shell's float arithmetic (tf_executor.h)
    const tensorflow::Tensor& input = ctx->input(0);
    const tensorflow::Tensor& filter = ctx->input(1);
    const tensorflow::Tensor& multiplier = ctx->input(2);
    const tensorflow::Tensor& bias = ctx->input(3);
    constexpr bool kPackedInput = std::is_same<T, std::int32_t>::value;
    BDepthwiseConv2DParams p = params_;
    Shape out;
    OP_REQUIRES_OK(ctx, ToTf(CheckBDepthwiseConv2DShapes(TfShape(input), kPackedInput,
                                                         TfShape(filter), TfShape(multiplier),
                                                         TfShape(bias), output_type_, &p, &out)));

    const bool bitpacked = output_type_ == OutputType::kBitpacked;
    std::shared_ptr<const ThresholdCache::Entry> thresholds;
    if (bitpacked) {
      OP_REQUIRES_OK(ctx, ToTf(thresholds_.Get(PerChannelConvParams(p),
                                               multiplier.flat<float>().data(),
                                               bias.flat<float>().data(), &thresholds)));
    }
    tensorflow::TensorShape out_shape;
    OP_REQUIRES_OK(ctx, tensorflow::TensorShape::BuildTensorShape(out.dims, &out_shape));
    tensorflow::Tensor* output = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, out_shape, &output));
    if (output->NumElements() == 0) return;

    const std::shared_ptr<const BDepthwisePlan> plan = plans_.Get(
        kernel_, p, reinterpret_cast<const PackedWord*>(filter.flat<std::int32_t>().data()),
        thresholds);
    TfExecutor executor(ctx);
    // A float input with a float or bit-packed output goes to the kernel as it
    // is (binarised there, core/bdepthwise.h; `packed` is its scratch when the
    // kernel packs first); otherwise it is packed here.
    constexpr bool kFloatInput = std::is_same<T, float>::value;
    const bool pass_floats = kFloatInput && output_type_ != OutputType::kInt8;
    const PackedWord* packed_input = nullptr;
    tensorflow::Tensor packed;  // scratch for a float or int8 input
    PackedWord* scratch = nullptr;
    if constexpr (kPackedInput) {
      packed_input = reinterpret_cast<const PackedWord*>(input.flat<std::int32_t>().data());
    } else if (!pass_floats || !plan->binarises_float_input()) {
      OP_REQUIRES_OK(ctx, ctx->allocate_temp(
                              tensorflow::DT_INT32,
                              tensorflow::TensorShape({p.batch, p.in_h, p.in_w, p.in_words()}),
                              &packed));
      scratch = reinterpret_cast<PackedWord*>(packed.flat<std::int32_t>().data());
      if constexpr (std::is_same<T, std::int8_t>::value) {
        BitpackInt8Rows(input.flat<std::int8_t>().data(), p.batch * p.in_h * p.in_w,
                        p.channels_in, int8_.input_zero_point, scratch, executor);
        packed_input = scratch;
      } else if (!pass_floats) {
        BitpackRows(kernel_, input.flat<float>().data(), p.batch * p.in_h * p.in_w,
                    p.channels_in, scratch, executor);
        packed_input = scratch;
      }
    }
    const float* floats = nullptr;
    if constexpr (kFloatInput) floats = input.flat<float>().data();
    if (bitpacked) {
      auto* bits = reinterpret_cast<PackedWord*>(output->flat<std::int32_t>().data());
      if (pass_floats) {
        BDepthwiseConv2DBitpackedFloatInput(*plan, floats, scratch, bits, executor);
      } else {
        BDepthwiseConv2DBitpacked(*plan, packed_input, bits, executor);
      }
      return;
    }
    const float* m = multiplier.flat<float>().data();
    const float* b = bias.flat<float>().data();
    if (output_type_ == OutputType::kInt8) {
      tensorflow::Tensor scratch;  // the float output, quantized after
      OP_REQUIRES_OK(ctx, ctx->allocate_temp(tensorflow::DT_FLOAT, out_shape, &scratch));
      BDepthwiseConv2DInt8(*plan, packed_input, m, b, int8_.output, scratch.flat<float>().data(),
                           output->flat<std::int8_t>().data(), executor);
      return;
    }
    if (pass_floats) {
      BDepthwiseConv2DFloatInput(*plan, floats, scratch, m, b, output->flat<float>().data(),
                                 executor);
      return;
    }
    BDepthwiseConv2D(*plan, packed_input, m, b, output->flat<float>().data(), executor);
  }

 private:
  static tensorflow::Status ToTf(const lowbit::Status& s) {
    return lowbit::ToTf(kDepthwiseOp, s);
  }

  const BConv2DKernel kernel_;  // chosen when the op was made
  BDepthwiseConv2DParams params_;
  OutputType output_type_ = OutputType::kFloat;
  Int8Attrs int8_;  // the quantization of an int8 input / output
  ThresholdCache thresholds_;  // of a bit-packed output
  PlanCache plans_;
};

REGISTER_KERNEL_BUILDER(
    Name("LowbitBDepthwiseConv2d").Device(tensorflow::DEVICE_CPU).TypeConstraint<float>("T"),
    BDepthwiseConv2DOp<float>);
REGISTER_KERNEL_BUILDER(
    Name("LowbitBDepthwiseConv2d").Device(tensorflow::DEVICE_CPU).TypeConstraint<std::int32_t>("T"),
    BDepthwiseConv2DOp<std::int32_t>);
REGISTER_KERNEL_BUILDER(
    Name("LowbitBDepthwiseConv2d").Device(tensorflow::DEVICE_CPU).TypeConstraint<std::int8_t>("T"),
    BDepthwiseConv2DOp<std::int8_t>);

}  // namespace lowbit
