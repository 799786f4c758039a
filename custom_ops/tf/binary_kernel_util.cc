#include "custom_ops/tf/binary_kernel_util.h"

#include <cstring>

#include "custom_ops/core/bitpack.h"
#include "custom_ops/tf/tf_executor.h"

namespace lowbit {

using tensorflow::errors::InvalidArgument;

tensorflow::Status ToTf(const char* op, const lowbit::Status& status) {
  if (status.ok) return tensorflow::Status();
  return InvalidArgument(op, ": ", status.message);
}

Shape TfShape(const tensorflow::Tensor& tensor) {
  return Shape::Of(tensor.shape().dim_sizes().data(), tensor.dims());
}

tensorflow::Status CheckToutAttr(tensorflow::OpKernelConstruction* ctx, const char* op,
                                 OutputType type) {
  tensorflow::DataType tout;
  TF_RETURN_IF_ERROR(ctx->GetAttr("Tout", &tout));
  const char* name = type == OutputType::kBitpacked ? "bitpacked"
                     : type == OutputType::kInt8    ? "int8"
                                                    : "float";
  const tensorflow::DataType want = type == OutputType::kBitpacked ? tensorflow::DT_INT32
                                    : type == OutputType::kInt8    ? tensorflow::DT_INT8
                                                                   : tensorflow::DT_FLOAT;
  if (tout != want) {
    return InvalidArgument(op, ": output_type \"", name, "\" needs Tout = ",
                           tensorflow::DataTypeString(want), ", got ",
                           tensorflow::DataTypeString(tout));
  }
  return tensorflow::Status();
}

tensorflow::Status ReadInt8Attrs(tensorflow::OpKernelConstruction* ctx, const char* op,
                                 Int8Attrs* attrs) {
  int input_zero_point = 0, output_zero_point = 0;
  float output_scale = 1.0f;
  TF_RETURN_IF_ERROR(ctx->GetAttr("input_zero_point", &input_zero_point));
  TF_RETURN_IF_ERROR(ctx->GetAttr("output_scale", &output_scale));
  TF_RETURN_IF_ERROR(ctx->GetAttr("output_zero_point", &output_zero_point));
  // The input's scale does not matter (only its sign, q >= zero_point): a
  // zero point is all there is to check.
  TF_RETURN_IF_ERROR(ToTf(op, CheckInt8Quantization("input", 1.0f, input_zero_point)));
  TF_RETURN_IF_ERROR(ToTf(op, CheckInt8Quantization("output", output_scale, output_zero_point)));
  attrs->input_zero_point = input_zero_point;
  attrs->output.scale = output_scale;
  attrs->output.zero_point = output_zero_point;
  return tensorflow::Status();
}

tensorflow::Status PackedInput(tensorflow::OpKernelContext* ctx, BConv2DKernel kernel,
                               const tensorflow::Tensor& input,
                               std::int64_t rows, std::int64_t channels,
                               tensorflow::Tensor* scratch, const PackedWord** packed,
                               std::int32_t int8_zero_point) {
  if (input.dtype() == tensorflow::DT_INT32) {
    *packed = reinterpret_cast<const PackedWord*>(input.flat<std::int32_t>().data());
    return tensorflow::Status();
  }
  TF_RETURN_IF_ERROR(ctx->allocate_temp(
      tensorflow::DT_INT32, tensorflow::TensorShape({rows, PackedWords(channels)}), scratch));
  PackedWord* dst = reinterpret_cast<PackedWord*>(scratch->flat<std::int32_t>().data());
  TfExecutor executor(ctx);
  if (input.dtype() == tensorflow::DT_INT8) {
    BitpackInt8Rows(input.flat<std::int8_t>().data(), rows, channels, int8_zero_point, dst,
                    executor);
  } else {
    BitpackRows(kernel, input.flat<float>().data(), rows, channels, dst, executor);
  }
  *packed = dst;
  return tensorflow::Status();
}

tensorflow::Status CompactFilter(tensorflow::OpKernelContext* ctx,
                                 const tensorflow::Tensor& filter, std::int64_t k,
                                 std::int64_t out_channels, tensorflow::Tensor* scratch,
                                 const PackedWord** compact) {
  if (filter.dtype() == tensorflow::DT_INT32) {
    *compact = reinterpret_cast<const PackedWord*>(filter.flat<std::int32_t>().data());
    return tensorflow::Status();
  }
  TF_RETURN_IF_ERROR(ctx->allocate_temp(
      tensorflow::DT_INT32, tensorflow::TensorShape({out_channels, PackedWords(k)}), scratch));
  PackedWord* dst = reinterpret_cast<PackedWord*>(scratch->flat<std::int32_t>().data());
  TfExecutor executor(ctx);
  BitpackColumns(filter.flat<float>().data(), k, out_channels, dst, executor);
  *compact = dst;
  return tensorflow::Status();
}

Status ThresholdCache::Get(const BConv2DParams& params, const float* multiplier,
                           const float* bias, std::shared_ptr<const Entry>* entry) {
  const std::int64_t k = params.kernel_h * params.kernel_w * params.channels_in;
  const std::int64_t channels = params.out_channels;
  const std::size_t bytes = static_cast<std::size_t>(channels) * sizeof(float);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    const Entry* last = last_.get();
    if (last != nullptr && last->k == k && last->channels == channels &&
        last->activation == params.activation &&
        std::memcmp(last->multiplier_bias.data(), multiplier, bytes) == 0 &&
        std::memcmp(last->multiplier_bias.data() + channels, bias, bytes) == 0) {
      *entry = last_;
      return Status::Ok();
    }
  }
  auto fresh = std::make_shared<Entry>();
  fresh->k = k;
  fresh->channels = channels;
  fresh->activation = params.activation;
  fresh->threshold.resize(static_cast<std::size_t>(channels));
  fresh->flip.resize(static_cast<std::size_t>(channels));
  const Status s = ComputeBConv2DThresholds(params, multiplier, bias, fresh->threshold.data(),
                                            fresh->flip.data());
  if (!s.ok) return s;
  fresh->multiplier_bias.resize(static_cast<std::size_t>(2 * channels));
  std::memcpy(fresh->multiplier_bias.data(), multiplier, bytes);
  std::memcpy(fresh->multiplier_bias.data() + channels, bias, bytes);
  std::lock_guard<std::mutex> lock(mutex_);
  last_ = fresh;
  *entry = std::move(fresh);
  return Status::Ok();
}

}  // namespace lowbit
