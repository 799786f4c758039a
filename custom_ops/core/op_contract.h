// The contract of the lowbit custom ops, written once, as data.
//
// Each op that a converted model carries as a TFLite CUSTOM op (LowbitBconv2d,
// LowbitBgemm, LowbitBMaxPool2d, LowbitBDepthwiseConv2d, LowbitMultibitConv2d,
// LowbitFastfood) has one entry here: its name, its options (the TF op's
// attributes, which TFLiteConverter writes into the CUSTOM op's FlexBuffer
// custom_options under the same keys) and its inputs and outputs. What reads it:
//   * custom_ops/tf/ops.cc builds each op's REGISTER_OP signature (the
//     "key: type ..." attr and input/output spec strings) from the entry;
//   * ReadOptions (below) validates a set of option values against the entry,
//     once for both shells: the TF kernels read their attributes through it,
//     the TFLite ops their FlexBuffer map; core/op_options.h then maps the
//     values to each op's params;
//   * lowbit_op_contract_json() in the TFLite library hands the table to
//     Python as JSON, where tests/core/test_op_contract.py holds the converter's
//     custom_op_specs.py and docs/custom_ops.md to it.
// What is not here, and why: the doc text of the TF registration and the
// shape functions (TF-only, in tf/ops.cc), and the constraints between
// several options or tensors (receptive field, channels_in * depth_multiplier,
// activation_mode vs activation_bits, filter words vs kernel size), which are
// code: the core's Check*Options, geometry functions and the shape checks of
// core/op_shapes.h that the TF Compute and TFLite Prepare of every op call.
//
// Plain C++17, no framework dependency: the table is constant data.
#ifndef LOWBIT_CORE_OP_CONTRACT_H_
#define LOWBIT_CORE_OP_CONTRACT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "custom_ops/core/types.h"

namespace lowbit {
namespace contract {

// kType is a TF type attribute (T, Tfilter, Tout): TF picks the kernel's
// dtypes with it; in TFLite the tensors carry their own types, so such
// attributes are tf_only.
// kFloat is used by tf_only attributes only (the int8 quantization of the TF
// ops' int8 tensors, which a TFLite tensor carries itself).
enum class OptionType { kInt, kString, kType, kFloat };

struct Option {
  const char* key;  // attribute name = custom_options key
  OptionType type;
  // kInt: the allowed values, minimum <= v <= maximum. TFLite checks both;
  // TF declares the minimum in the OpDef (">= minimum") when tf_minimum is
  // set (OpDef validation then rejects a lower value when the graph is
  // built), and the kernels check the rest through ReadOptions.
  std::int64_t minimum;
  std::int64_t maximum;
  bool tf_minimum;
  // kString / kType: the allowed values, nullptr-terminated (kType: TF type
  // names, "float", "int32").
  const char* const* choices;
  // The TF attribute's default, as its value is written ("1", "VALID",
  // "DT_FLOAT", "1.0"); nullptr: the attribute is required.
  const char* tf_default;
  // An option added after the first version of the contract (output_type,
  // epilogue): a TFLite reader takes tf_default when it is absent, and the
  // converter leaves it out when it has that value, so that older readers
  // and files are unaffected. Other options are required in custom_options
  // even where the TF attribute has a default.
  bool optional;
  // Only the TF op has it: type attributes and counts of variadic inputs
  // (num_epilogue_inputs); TFLite reads those from the tensors.
  bool tf_only;
};

// One input or output. TFLite does not know TF's type attrs, so both views
// are written down: tf_type is the OpDef arg type ("float", "int32", a type
// attr "T", or "num_epilogue_inputs * float" for a variadic list), and
// tflite_types the tensor types the TFLite op accepts.
struct Tensor {
  const char* name;
  const char* tf_type;
  const char* tflite_types;  // "FLOAT32", "FLOAT32|INT32", ...
  // Rank accepted by the TFLite op: min_rank <= rank <= max_rank, max_rank -1
  // for no upper bound. (The TF op's float filters, for training, have other
  // ranks: see the TF doc text.)
  int min_rank;
  int max_rank;
  // A variadic list (TF) / trailing inputs (TFLite) whose count follows from
  // the options; not counted in OpContract::fixed_inputs().
  bool variadic;
};

struct OpContract {
  const char* name;  // TF op name = TFLite custom_code
  const Option* options;
  int num_options;
  const Tensor* inputs;
  int num_inputs;
  const Tensor* outputs;
  int num_outputs;

  // The option with this key, or nullptr.
  const Option* Find(const char* key) const;
  // Inputs every node has (the non-variadic ones, which come first).
  int fixed_inputs() const;
};

// The table: every op, and the one with this name (nullptr if none).
const OpContract* OpContracts(int* count);
const OpContract* FindOpContract(const char* name);

// The TF OpDef spec string of an option ("stride_h: int >= 1 = 1",
// "padding: {'SAME', 'VALID'} = 'VALID'") and of an input or output
// ("input: T").
std::string TfAttrSpec(const Option& option);
std::string TfArgSpec(const Tensor& tensor);

// The whole table as JSON (what lowbit_op_contract_json returns).
std::string OpContractsJson();

// Where option values come from: the TF attributes of a node or a TFLite
// FlexBuffer map. The shells implement it; messages name the key.
class OptionSource {
 public:
  virtual ~OptionSource() = default;
  virtual bool Has(const char* key) const = 0;
  // Fail (naming the key) on a value of another type.
  virtual Status GetInt(const char* key, std::int64_t* out) const = 0;
  virtual Status GetString(const char* key, std::string* out) const = 0;
};

// The values of one op's options (not the tf_only ones), validated.
class OptionValues {
 public:
  // The value of an option of the op's entry (read by ReadOptions).
  std::int64_t Int(const char* key) const;
  const std::string& String(const char* key) const;

 private:
  friend Status ReadOptions(const OpContract&, const OptionSource&, OptionValues*);
  struct Entry {
    const char* key;
    std::int64_t int_value;
    std::string string_value;
  };
  const Entry& Get(const char* key) const;
  std::vector<Entry> entries_;
};

// Reads every option of `op` that is not tf_only from `source` and checks it
// against the entry: present (or optional: then its default), of its type,
// in its range or among its choices. Messages name the key and the value:
// "missing option 'padding'", "option 'stride_h' = 0 is out of range [1,
// 2147483647]", "option 'padding' = \"FULL\" must be one of \"SAME\", \"VALID\"".
Status ReadOptions(const OpContract& op, const OptionSource& source, OptionValues* values);

}  // namespace contract
}  // namespace lowbit

#endif  // LOWBIT_CORE_OP_CONTRACT_H_
