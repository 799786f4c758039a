#include "custom_ops/tflite/op_registry.h"

#include <cstring>

namespace lowbit {
namespace tflite {
namespace {

// Every custom op the delegate claims. One line per op.
constexpr OpEntry kOps[] = {
    {"LowbitBconv2d", &CreateBconv2dOp},
    {"LowbitBMaxPool2d", &CreateBMaxPool2dOp},
};

}  // namespace

const OpEntry* FindOp(const char* custom_name) {
  if (custom_name == nullptr) return nullptr;
  for (const OpEntry& entry : kOps) {
    if (std::strcmp(entry.custom_name, custom_name) == 0) return &entry;
  }
  return nullptr;
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

}  // namespace tflite
}  // namespace lowbit
