// The TF attributes of a node as a contract::OptionSource, so that the TF
// kernels (OpKernelConstruction) and shape functions (InferenceContext), which
// offer the same GetAttr, read their options through the core's one reader
// (core/op_options.h), as the TFLite ops read their custom_options.
#ifndef LOWBIT_TF_ATTR_SOURCE_H_
#define LOWBIT_TF_ATTR_SOURCE_H_

#include <cstdint>
#include <string>

#include "custom_ops/core/op_contract.h"
#include "tensorflow/core/framework/op_kernel.h"

namespace lowbit {

template <typename Context>
class TfAttrSource final : public contract::OptionSource {
 public:
  explicit TfAttrSource(Context* context) : context_(context) {}

  // A node has every attribute of its OpDef (TF fills in the defaults), so
  // none is absent; a failing GetAttr is reported by the getters.
  bool Has(const char* /*key*/) const override { return true; }
  Status GetInt(const char* key, std::int64_t* out) const override {
    return Convert(context_->GetAttr(key, out));
  }
  Status GetString(const char* key, std::string* out) const override {
    return Convert(context_->GetAttr(key, out));
  }

 private:
  static Status Convert(const tensorflow::Status& status) {
    if (status.ok()) return Status::Ok();
    return Status::Error(std::string(status.message()));
  }

  Context* context_;
};

}  // namespace lowbit

#endif  // LOWBIT_TF_ATTR_SOURCE_H_
