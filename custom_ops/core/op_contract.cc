#include "custom_ops/core/op_contract.h"

#include <cstring>
#include <string>
#include <utility>

namespace lowbit {
namespace contract {
namespace {

// The TFLite readers' bound on int options: custom_options ints are int64,
// every size the ops keep must fit int (the core's own, smaller limits are
// its Check*Options).
constexpr std::int64_t kIntMax = 2147483647;

constexpr const char* kPaddings[] = {"SAME", "VALID", nullptr};
constexpr const char* kConvPaddings[] = {"SAME", "VALID", "EXPLICIT", nullptr};
constexpr const char* kActivations[] = {"NONE", "RELU", nullptr};
constexpr const char* kOutputTypes[] = {"float", "bitpacked", nullptr};
// The binary conv, dense, depthwise and multi-bit ops also read and write
// int8 tensors (core/int8_io.h); the Fastfood op float or int8 ones.
constexpr const char* kOutputTypesInt8[] = {"float", "bitpacked", "int8", nullptr};
constexpr const char* kOutputTypesFloatInt8[] = {"float", "int8", nullptr};
constexpr const char* kEpilogues[] = {"none", "affine", "add", "affine_add", nullptr};
constexpr const char* kActivationModes[] = {"sign", "abc", "dorefa", nullptr};
constexpr const char* kFloatInt32[] = {"float", "int32", nullptr};
constexpr const char* kFloatInt32Int8[] = {"float", "int32", "int8", nullptr};
constexpr const char* kFloatInt8[] = {"float", "int8", nullptr};

// A required int option >= minimum (declared to TF), with an optional TF default.
constexpr Option Int(const char* key, std::int64_t minimum, const char* tf_default = nullptr) {
  return Option{key, OptionType::kInt, minimum, kIntMax, true, nullptr, tf_default, false, false};
}
// A string option among `choices`.
constexpr Option String(const char* key, const char* const* choices, const char* tf_default,
                        bool optional = false) {
  return Option{key, OptionType::kString, 0, 0, false, choices, tf_default, optional, false};
}
// A TF type attribute (float or int32, or `choices`).
constexpr Option Type(const char* key, const char* tf_default = nullptr,
                      const char* const* choices = kFloatInt32) {
  return Option{key, OptionType::kType, 0, 0, false, choices, tf_default, false, true};
}
// The TF ops' int8 quantization attributes: a TFLite int8 tensor carries its
// own scale and zero point, so these are tf_only.
constexpr Option ZeroPoint(const char* key) {
  return Option{key, OptionType::kInt, -128, 127, false, nullptr, "0", false, true};
}
constexpr Option Scale(const char* key) {
  return Option{key, OptionType::kFloat, 0, 0, false, nullptr, "1.0", false, true};
}

// The options several ops share, each written once.
constexpr Option kChannelsIn = Int("channels_in", 1);
constexpr Option kKernelH = Int("kernel_h", 1);
constexpr Option kKernelW = Int("kernel_w", 1);
constexpr Option kStrideH = Int("stride_h", 1, "1");
constexpr Option kStrideW = Int("stride_w", 1, "1");
constexpr Option kDilationH = Int("dilation_h", 1, "1");
constexpr Option kDilationW = Int("dilation_w", 1, "1");
constexpr Option kPadding = String("padding", kPaddings, "VALID");
// LowbitBconv2d's padding may also be EXPLICIT, with the rows / columns padded
// on each side in four optional ints (added after the first version: absent
// means 0, so older files read as before).
constexpr Option kConvPadding = String("padding", kConvPaddings, "VALID");
constexpr Option ExplicitPad(const char* key) {
  return Option{key, OptionType::kInt, 0, kIntMax, true, nullptr, "0", true, false};
}
// 0 or 1; the TF attribute has no declared minimum (its OpDef predates the
// table and must stay as it is), so its range is checked by ReadOptions only.
constexpr Option kPadValue = {"pad_value", OptionType::kInt, 0, 1, false, nullptr, "0",
                              false, false};
constexpr Option kActivation = String("activation", kActivations, "NONE");
constexpr Option kOutputType = String("output_type", kOutputTypes, "float", /*optional=*/true);
constexpr Option kT = Type("T");
constexpr Option kTfilter = Type("Tfilter");
constexpr Option kTout = Type("Tout", "DT_FLOAT");
// LowbitBconv2d, LowbitBgemm, LowbitBDepthwiseConv2d: int8 input and output
// too, with the TF op's quantization of them (input: only the zero point
// matters, see int8_io.h).
constexpr Option kTInt8 = Type("T", nullptr, kFloatInt32Int8);
constexpr Option kToutInt8 = Type("Tout", "DT_FLOAT", kFloatInt32Int8);
constexpr Option kOutputTypeInt8 = String("output_type", kOutputTypesInt8, "float", true);
constexpr Option kInputZeroPoint = ZeroPoint("input_zero_point");
constexpr Option kOutputScale = Scale("output_scale");
constexpr Option kOutputZeroPoint = ZeroPoint("output_zero_point");

// Tensors: name, TF arg type, TFLite types, TFLite rank range, variadic.
constexpr Tensor kPackedOrFloatNhwc = {"input", "T", "FLOAT32|INT32", 4, -1, false};
constexpr Tensor kPackedFloatOrInt8Nhwc = {"input", "T", "FLOAT32|INT32|INT8", 4, -1, false};
constexpr Tensor kPackedFilter = {"filter", "int32", "INT32", 2, 2, false};
constexpr Tensor kMultiplier = {"multiplier", "float", "FLOAT32", 1, 1, false};
constexpr Tensor kBias = {"bias", "float", "FLOAT32", 1, 1, false};
constexpr Tensor kOutputTout = {"output", "Tout", "FLOAT32|INT32", 4, -1, false};

// LowbitBconv2d
constexpr Option kBconv2dOptions[] = {
    kTInt8, kTfilter, kToutInt8, kChannelsIn, kKernelH, kKernelW, kStrideH, kStrideW,
    kDilationH, kDilationW, kConvPadding, kPadValue, kActivation, kOutputTypeInt8,
    String("epilogue", kEpilogues, "none", /*optional=*/true),
    {"num_epilogue_inputs", OptionType::kInt, 0, kIntMax, true, nullptr, "0", false, true},
    ExplicitPad("explicit_pad_top"), ExplicitPad("explicit_pad_bottom"),
    ExplicitPad("explicit_pad_left"), ExplicitPad("explicit_pad_right"),
    kInputZeroPoint, kOutputScale, kOutputZeroPoint,
    // A ReLU after the epilogue, int8 output only (a quantized model's ReLU
    // that follows the conv's residual add, folded into the quantization).
    String("output_activation", kActivations, "NONE", /*optional=*/true),
};
constexpr Tensor kBconv2dInputs[] = {
    kPackedFloatOrInt8Nhwc,
    {"filter", "Tfilter", "INT32", 2, 2, false},
    kMultiplier,
    kBias,
    // post_multiplier, post_bias [C_out] and/or the residual (the output's
    // shape; in TFLite FLOAT32 or INT8, whose real values are added).
    {"epilogue_inputs", "num_epilogue_inputs * float", "FLOAT32|INT8", 1, -1, true},
};
constexpr Tensor kBconv2dOutputs[] = {{"output", "Tout", "FLOAT32|INT32|INT8", 4, -1, false}};

// LowbitBgemm
constexpr Option kBgemmOptions[] = {kTInt8,          kTfilter,     kToutInt8,
                                    kChannelsIn,     kActivation,  kOutputTypeInt8,
                                    kInputZeroPoint, kOutputScale, kOutputZeroPoint};
constexpr Tensor kBgemmInputs[] = {
    {"input", "T", "FLOAT32|INT32|INT8", 1, -1, false},
    {"filter", "Tfilter", "INT32", 2, 2, false},
    kMultiplier,
    kBias,
};
constexpr Tensor kBgemmOutputs[] = {{"output", "Tout", "FLOAT32|INT32|INT8", 1, -1, false}};

// LowbitBMaxPool2d
constexpr Option kBMaxPool2dOptions[] = {
    Int("channels", 1), Int("filter_h", 1), Int("filter_w", 1), kStrideH, kStrideW, kPadding,
};
constexpr Tensor kBMaxPool2dInputs[] = {{"input", "int32", "INT32", 4, -1, false}};
constexpr Tensor kBMaxPool2dOutputs[] = {{"output", "int32", "INT32", 4, -1, false}};

// LowbitMultibitConv2d. Its int8 and packed input and output came after the
// first version: the dtype attributes default to float and the rest is
// optional, so older graphs and files read as before. An int8 input's scale
// matters here (its planes are those of the real values), so the TF op has
// input_scale too.
constexpr Option kMultibitConv2dOptions[] = {
    kChannelsIn, kKernelH, kKernelW, kStrideH, kStrideW, kDilationH, kDilationW, kPadding,
    kPadValue, kActivation, String("activation_mode", kActivationModes, nullptr),
    Int("activation_bits", 0, "0"),
    Type("T", "DT_FLOAT", kFloatInt32Int8), kToutInt8, kOutputTypeInt8,
    Scale("input_scale"), kInputZeroPoint, kOutputScale, kOutputZeroPoint,
};
constexpr Tensor kMultibitConv2dInputs[] = {
    kPackedFloatOrInt8Nhwc,
    {"filter", "int32", "INT32", 3, 3, false},
    {"alphas", "float", "FLOAT32", 2, 2, false},
    {"shifts", "float", "FLOAT32", 1, 1, false},
    {"betas", "float", "FLOAT32", 1, 1, false},
    kBias,
};
constexpr Tensor kMultibitConv2dOutputs[] = {
    {"output", "Tout", "FLOAT32|INT32|INT8", 4, -1, false}};

// LowbitFastfood. Its int8 input and output came after the first version,
// as the multi-bit conv's: the dtype attributes default to float, output_type
// is optional, so older graphs and files read as before. x's real values
// matter (they are transformed, not binarised), so the TF op has input_scale.
constexpr Option kFastfoodOptions[] = {
    Int("units", 1), kActivation, Type("T", "DT_FLOAT", kFloatInt8),
    Type("Tout", "DT_FLOAT", kFloatInt8),
    String("output_type", kOutputTypesFloatInt8, "float", /*optional=*/true),
    Scale("input_scale"), kInputZeroPoint, kOutputScale, kOutputZeroPoint,
};
constexpr Tensor kFastfoodInputs[] = {
    {"x", "T", "FLOAT32|INT8", 1, -1, false},
    {"b", "float", "FLOAT32", 2, 2, false},
    {"g", "float", "FLOAT32", 2, 2, false},
    {"s", "float", "FLOAT32", 2, 2, false},
    {"permutation", "int32", "INT32", 2, 2, false},
    kBias,
};
constexpr Tensor kFastfoodOutputs[] = {{"output", "Tout", "FLOAT32|INT8", 1, -1, false}};

// LowbitBDepthwiseConv2d
constexpr Option kBDepthwiseConv2dOptions[] = {
    kTInt8, kToutInt8, kChannelsIn, Int("depth_multiplier", 1, "1"), kKernelH, kKernelW,
    kStrideH, kStrideW, kDilationH, kDilationW, kPadding, kPadValue, kActivation,
    kOutputTypeInt8, kInputZeroPoint, kOutputScale, kOutputZeroPoint,
};
constexpr Tensor kBDepthwiseConv2dInputs[] = {
    kPackedFloatOrInt8Nhwc,
    {"filter", "int32", "INT32", 3, 3, false},
    kMultiplier,
    kBias,
};
constexpr Tensor kBDepthwiseConv2dOutputs[] = {
    {"output", "Tout", "FLOAT32|INT32|INT8", 4, -1, false}};

#define LOWBIT_CONTRACT(name, prefix)                                                   \
  OpContract {                                                                         \
    name, prefix##Options, static_cast<int>(sizeof(prefix##Options) / sizeof(Option)), \
        prefix##Inputs, static_cast<int>(sizeof(prefix##Inputs) / sizeof(Tensor)),     \
        prefix##Outputs, static_cast<int>(sizeof(prefix##Outputs) / sizeof(Tensor))    \
  }

const OpContract kContracts[] = {
    LOWBIT_CONTRACT("LowbitBconv2d", kBconv2d),
    LOWBIT_CONTRACT("LowbitBgemm", kBgemm),
    LOWBIT_CONTRACT("LowbitBMaxPool2d", kBMaxPool2d),
    LOWBIT_CONTRACT("LowbitMultibitConv2d", kMultibitConv2d),
    LOWBIT_CONTRACT("LowbitFastfood", kFastfood),
    LOWBIT_CONTRACT("LowbitBDepthwiseConv2d", kBDepthwiseConv2d),
};

#undef LOWBIT_CONTRACT

const char* TypeName(OptionType type) {
  switch (type) {
    case OptionType::kInt: return "int";
    case OptionType::kString: return "string";
    case OptionType::kType: return "type";
    case OptionType::kFloat: return "float";
  }
  return "";
}

// Names and choices are plain identifiers, so quoting needs no escapes.
std::string Quoted(const char* text) { return std::string("\"") + text + "\""; }

std::string JsonList(const char* const* values) {
  std::string out = "[";
  for (int i = 0; values[i] != nullptr; ++i) out += (i ? ", " : "") + Quoted(values[i]);
  return out + "]";
}

// "FLOAT32|INT32" -> ["FLOAT32", "INT32"]
std::string JsonTypes(const char* types) {
  std::string out = "[", text = types;
  std::size_t begin = 0;
  while (begin <= text.size()) {
    std::size_t end = text.find('|', begin);
    if (end == std::string::npos) end = text.size();
    out += (begin ? ", " : "") + Quoted(text.substr(begin, end - begin).c_str());
    begin = end + 1;
  }
  return out + "]";
}

std::string JsonValue(const Option& option, const char* value) {
  const bool number = option.type == OptionType::kInt || option.type == OptionType::kFloat;
  return number ? std::string(value) : Quoted(value);
}

std::string OptionJson(const Option& o) {
  std::string out = "{\"key\": " + Quoted(o.key) + ", \"type\": " + Quoted(TypeName(o.type));
  if (o.type == OptionType::kFloat) {
    // no range or choices
  } else if (o.type == OptionType::kInt) {
    out += ", \"minimum\": " + std::to_string(o.minimum) +
           ", \"maximum\": " + std::to_string(o.maximum) +
           ", \"tf_minimum\": " + (o.tf_minimum ? "true" : "false");
  } else {
    out += ", \"choices\": " + JsonList(o.choices);
  }
  if (o.tf_default != nullptr) out += ", \"tf_default\": " + JsonValue(o, o.tf_default);
  if (o.optional) out += ", \"default\": " + JsonValue(o, o.tf_default);
  out += std::string(", \"optional\": ") + (o.optional ? "true" : "false") +
         ", \"tf_only\": " + (o.tf_only ? "true" : "false") + "}";
  return out;
}

std::string TensorJson(const Tensor& t) {
  return "{\"name\": " + Quoted(t.name) + ", \"tf_type\": " + Quoted(t.tf_type) +
         ", \"tflite_types\": " + JsonTypes(t.tflite_types) +
         ", \"min_rank\": " + std::to_string(t.min_rank) +
         ", \"max_rank\": " + std::to_string(t.max_rank) +
         ", \"variadic\": " + (t.variadic ? "true" : "false") + "}";
}

}  // namespace

const Option* OpContract::Find(const char* key) const {
  for (int i = 0; i < num_options; ++i) {
    if (std::strcmp(options[i].key, key) == 0) return &options[i];
  }
  return nullptr;
}

int OpContract::fixed_inputs() const {
  int count = 0;
  for (int i = 0; i < num_inputs; ++i) count += inputs[i].variadic ? 0 : 1;
  return count;
}

const OpContract* OpContracts(int* count) {
  *count = static_cast<int>(sizeof(kContracts) / sizeof(kContracts[0]));
  return kContracts;
}

const OpContract* FindOpContract(const char* name) {
  if (name == nullptr) return nullptr;
  for (const OpContract& op : kContracts) {
    if (std::strcmp(op.name, name) == 0) return &op;
  }
  return nullptr;
}

std::string TfAttrSpec(const Option& o) {
  std::string spec = std::string(o.key) + ": ";
  if (o.type == OptionType::kInt) {
    spec += "int";
    if (o.tf_minimum) spec += " >= " + std::to_string(o.minimum);
  } else if (o.type == OptionType::kFloat) {
    spec += "float";
  } else {
    const bool quote = o.type == OptionType::kString;
    spec += "{";
    for (int i = 0; o.choices[i] != nullptr; ++i) {
      spec += i ? ", " : "";
      spec += quote ? "'" + std::string(o.choices[i]) + "'" : std::string(o.choices[i]);
    }
    spec += "}";
  }
  if (o.tf_default != nullptr) {
    spec += " = ";
    spec += o.type == OptionType::kString ? "'" + std::string(o.tf_default) + "'"
                                          : std::string(o.tf_default);
  }
  return spec;
}

std::string TfArgSpec(const Tensor& t) { return std::string(t.name) + ": " + t.tf_type; }

std::string OpContractsJson() {
  std::string out = "{\"ops\": [";
  for (std::size_t i = 0; i < sizeof(kContracts) / sizeof(kContracts[0]); ++i) {
    const OpContract& op = kContracts[i];
    out += (i ? ", " : "") + std::string("{\"name\": ") + Quoted(op.name) +
           ", \"num_inputs\": " + std::to_string(op.fixed_inputs()) + ", \"options\": [";
    for (int j = 0; j < op.num_options; ++j) out += (j ? ", " : "") + OptionJson(op.options[j]);
    out += "], \"inputs\": [";
    for (int j = 0; j < op.num_inputs; ++j) out += (j ? ", " : "") + TensorJson(op.inputs[j]);
    out += "], \"outputs\": [";
    for (int j = 0; j < op.num_outputs; ++j) out += (j ? ", " : "") + TensorJson(op.outputs[j]);
    out += "]}";
  }
  return out + "]}";
}

const OptionValues::Entry& OptionValues::Get(const char* key) const {
  for (const Entry& e : entries_) {
    if (std::strcmp(e.key, key) == 0) return e;
  }
  // A key outside the op's entry is a programming error of the caller.
  static const Entry kNone{"", 0, ""};
  return kNone;
}

std::int64_t OptionValues::Int(const char* key) const { return Get(key).int_value; }

const std::string& OptionValues::String(const char* key) const {
  return Get(key).string_value;
}

Status ReadOptions(const OpContract& op, const OptionSource& source, OptionValues* values) {
  values->entries_.clear();
  for (int i = 0; i < op.num_options; ++i) {
    const Option& o = op.options[i];
    if (o.tf_only) continue;
    OptionValues::Entry entry{o.key, 0, ""};
    const bool use_default = !source.Has(o.key);
    if (use_default && !o.optional) {
      return Status::Error(std::string("missing option '") + o.key + "'");
    }
    if (o.type == OptionType::kInt) {
      if (use_default) {
        entry.int_value = std::stoll(o.tf_default);
      } else {
        Status s = source.GetInt(o.key, &entry.int_value);
        if (!s.ok) return s;
      }
      if (entry.int_value < o.minimum || entry.int_value > o.maximum) {
        return Status::Error(std::string("option '") + o.key + "' = " +
                             std::to_string(entry.int_value) + " is out of range [" +
                             std::to_string(o.minimum) + ", " + std::to_string(o.maximum) + "]");
      }
    } else {
      if (use_default) {
        entry.string_value = o.tf_default;
      } else {
        Status s = source.GetString(o.key, &entry.string_value);
        if (!s.ok) return s;
      }
      bool allowed = false;
      std::string list;
      for (int j = 0; o.choices[j] != nullptr; ++j) {
        allowed = allowed || entry.string_value == o.choices[j];
        list += (j ? ", " : "") + Quoted(o.choices[j]);
      }
      if (!allowed) {
        return Status::Error(std::string("option '") + o.key + "' = " +
                             Quoted(entry.string_value.c_str()) + " must be one of " + list);
      }
    }
    values->entries_.push_back(std::move(entry));
  }
  return Status::Ok();
}

}  // namespace contract
}  // namespace lowbit
