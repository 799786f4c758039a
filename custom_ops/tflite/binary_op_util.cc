#include "custom_ops/tflite/binary_op_util.h"

#include <cstring>
#include <string>

#include "custom_ops/core/bitpack.h"
#include "custom_ops/core/int8_io.h"

namespace lowbit {
namespace tflite {

const char* const kBinaryOpInputNames[4] = {"input", "filter", "multiplier", "bias"};

Status CheckBinaryOpTypes(const std::vector<TensorRef>& inputs, std::size_t extra_inputs) {
  if (inputs.size() != 4 + extra_inputs) {
    return Status::Error("expected " + std::to_string(4 + extra_inputs) +
                         " inputs (input, filter, multiplier, bias" +
                         (extra_inputs ? " and the epilogue's" : "") + "), got " +
                         std::to_string(inputs.size()));
  }
  const char* const* names = kBinaryOpInputNames;
  for (int i = 0; i < 4; ++i) {
    if (!inputs[i].present) return Status::Error(std::string(names[i]) + " is missing");
  }
  const TensorRef& filter = inputs[1];
  if (filter.type != kTfLiteInt32) {
    return Status::Error(std::string("filter must be INT32 (packed words), got ") +
                         TypeName(filter.type) +
                         " (float filters are accepted by the TF op only, for training; "
                         "lowbit_converter packs them)");
  }
  for (int i = 2; i < 4; ++i) {
    if (inputs[i].type != kTfLiteFloat32) {
      return Status::Error(std::string(names[i]) + " must be FLOAT32, got " +
                           TypeName(inputs[i].type));
    }
  }
  return Status::Ok();
}

Status BinaryOpInput::Read(const TensorRef& input) {
  if (input.type != kTfLiteFloat32 && input.type != kTfLiteInt32 && input.type != kTfLiteInt8) {
    return Status::Error(std::string("input must be FLOAT32, INT32 (packed) or INT8, got ") +
                         TypeName(input.type));
  }
  type = input.type;
  zero_point = 0;
  if (type == kTfLiteInt8) {
    Int8Quantization q;
    Status s = TensorInt8Quantization("input", input, &q);
    if (!s.ok) return s;
    zero_point = q.zero_point;
  }
  return Status::Ok();
}

std::size_t BinaryOpInput::Bytes(std::int64_t elements) const {
  return type == kTfLiteInt8 ? Bytes1(elements) : Bytes4(elements);
}

const PackedWord* BinaryOpInput::Pack(BConv2DKernel kernel, const TensorRef& input,
                                      std::int64_t rows, std::int64_t channels,
                                      PackedWord* scratch, ParallelExecutor& executor) const {
  if (type == kTfLiteInt32) return static_cast<const PackedWord*>(input.data);
  if (type == kTfLiteInt8) {
    BitpackInt8Rows(static_cast<const std::int8_t*>(input.data), rows, channels, zero_point,
                    scratch, executor);
  } else {
    BitpackRows(kernel, static_cast<const float*>(input.data), rows, channels, scratch,
                executor);
  }
  return scratch;
}

TfLiteType OutputTensorType(OutputType type) {
  return type == OutputType::kBitpacked ? kTfLiteInt32
         : type == OutputType::kInt8    ? kTfLiteInt8
                                        : kTfLiteFloat32;
}

std::size_t OutputBytes(OutputType type, std::int64_t elements) {
  return type == OutputType::kInt8 ? Bytes1(elements) : Bytes4(elements);
}

void PreparedWeights::UpdateFilter(const BConv2DParams& params, const TensorRef& filter) {
  const auto* compact = static_cast<const PackedWord*>(filter.data);
  if (filter.constant && filter.data == constant_source_ && filter_.Matches(kernel_, params)) {
    return;
  }
  if (!filter_.SameSource(kernel_, params, compact)) filter_.Prepare(kernel_, params, compact);
  constant_source_ = filter.constant ? filter.data : nullptr;
}

Status CachedThresholds::Update(const BConv2DParams& params, const float* multiplier,
                                const float* bias, bool* computed) {
  if (computed != nullptr) *computed = false;
  const std::size_t cout = static_cast<std::size_t>(params.out_channels);
  if (transform_.size() == 2 * cout &&
      std::memcmp(transform_.data(), multiplier, cout * sizeof(float)) == 0 &&
      std::memcmp(transform_.data() + cout, bias, cout * sizeof(float)) == 0) {
    return Status::Ok();
  }
  transform_.clear();
  threshold_.resize(cout);
  flip_.resize(cout);
  Status s = ComputeBConv2DThresholds(params, multiplier, bias, threshold_.data(), flip_.data());
  if (!s.ok) return s;
  transform_.assign(multiplier, multiplier + cout);
  transform_.insert(transform_.end(), bias, bias + cout);
  if (computed != nullptr) *computed = true;
  return Status::Ok();
}

}  // namespace tflite
}  // namespace lowbit
