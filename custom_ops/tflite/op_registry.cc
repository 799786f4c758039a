#include "custom_ops/tflite/op_registry.h"

#include <cstdint>
#include <cstring>
#include <string>

#include "custom_ops/core/op_contract.h"

namespace lowbit {
namespace tflite {
namespace {

// Every custom op the delegate claims. One line per op.
constexpr OpEntry kOps[] = {
    {"LowbitBconv2d", &CreateBconv2dOp},
    {"LowbitBgemm", &CreateBgemmOp},
    {"LowbitBMaxPool2d", &CreateBMaxPool2dOp},
    {"LowbitMultibitConv2d", &CreateMultibitConv2dOp},
    {"LowbitFastfood", &CreateFastfoodOp},
    {"LowbitBDepthwiseConv2d", &CreateBDepthwiseConv2dOp},
};

}  // namespace

const OpEntry* FindOp(const char* custom_name) {
  if (custom_name == nullptr) return nullptr;
  for (const OpEntry& entry : kOps) {
    if (std::strcmp(entry.custom_name, custom_name) == 0) return &entry;
  }
  return nullptr;
}

Status ParseOptions(const std::uint8_t* options, std::size_t size, flex::Map* map) {
  if (options == nullptr || size == 0) {
    return Status::Error("custom options are missing (expected a FlexBuffer map)");
  }
  Status s = flex::Map::Parse(options, size, map);
  if (!s.ok) return Status::Error("bad custom options: " + s.message);
  return Status::Ok();
}

bool FlexOptionSource::Has(const char* key) const {
  flex::Value value;
  return map_.Find(key, &value);
}

Status FlexOptionSource::GetInt(const char* key, std::int64_t* out) const {
  return flex::GetInt(map_, key, out);
}

Status FlexOptionSource::GetString(const char* key, std::string* out) const {
  return flex::GetString(map_, key, out);
}

Status CheckEvalBuffers(const std::vector<TensorRef>& inputs, const char* const* names,
                        const std::size_t* need, const TensorRef& output, TfLiteType out_type,
                        std::size_t out_bytes) {
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    if (need[i] == 0) continue;  // an input allowed to be empty
    if (inputs[i].data == nullptr) return Status::Error(std::string(names[i]) + " has no data");
    if (inputs[i].bytes < need[i]) {
      return Status::Error(std::string(names[i]) + " holds " + std::to_string(inputs[i].bytes) +
                           " bytes, expected " + std::to_string(need[i]));
    }
  }
  if (output.data == nullptr) return Status::Error("output has no data");
  if (output.type != out_type || output.bytes < out_bytes) {
    return Status::Error(std::string("output must be ") + TypeName(out_type) + " with " +
                         std::to_string(out_bytes) + " bytes, got " + TypeName(output.type) +
                         " with " + std::to_string(output.bytes));
  }
  return Status::Ok();
}

std::size_t Bytes4(std::int64_t count) {
  if (count <= 0 || count > static_cast<std::int64_t>(SIZE_MAX / 4)) return 0;
  return static_cast<std::size_t>(count) * 4;
}

std::size_t Bytes1(std::int64_t count) {
  if (count <= 0 || static_cast<std::uint64_t>(count) > SIZE_MAX) return 0;
  return static_cast<std::size_t>(count);
}

std::string ShapeString(const TensorRef& t) {
  std::string s = "[";
  for (int i = 0; i < t.rank; ++i) {
    if (i) s += ", ";
    s += std::to_string(t.dims[i]);
  }
  return s + "]";
}

const char* TypeName(TfLiteType type) {
  switch (type) {
    case kTfLiteNoType: return "NOTYPE";
    case kTfLiteFloat32: return "FLOAT32";
    case kTfLiteInt32: return "INT32";
    case kTfLiteUInt8: return "UINT8";
    case kTfLiteInt64: return "INT64";
    case kTfLiteString: return "STRING";
    case kTfLiteBool: return "BOOL";
    case kTfLiteInt16: return "INT16";
    case kTfLiteInt8: return "INT8";
    case kTfLiteFloat16: return "FLOAT16";
    case kTfLiteFloat64: return "FLOAT64";
    case kTfLiteUInt32: return "UINT32";
    default: return "OTHER";
  }
}

Status TensorInt8Quantization(const char* what, const TensorRef& t, Int8Quantization* q) {
  if (t.num_scales == 0) {
    return Status::Error(std::string(what) + " is INT8 but has no quantization (scale and " +
                         "zero point)");
  }
  if (t.num_scales != 1) {
    return Status::Error(std::string(what) + " must be quantized per tensor (one scale), got " +
                         std::to_string(t.num_scales) + " scales (per-channel)");
  }
  Status s = CheckInt8Quantization(what, t.scale, t.zero_point);
  if (!s.ok) return s;
  q->scale = t.scale;
  q->zero_point = static_cast<std::int32_t>(t.zero_point);
  return Status::Ok();
}

}  // namespace tflite
}  // namespace lowbit

// The op contract table (core/op_contract.h) as JSON, for tools and tests
// that need it without TensorFlow (tests/core/test_op_contract.py):
// ctypes.CDLL(lowbit_tf._native.tflite_library_path()).lowbit_op_contract_json
extern "C" __attribute__((visibility("default"))) const char* lowbit_op_contract_json() {
  static const std::string json = lowbit::contract::OpContractsJson();
  return json.c_str();
}
