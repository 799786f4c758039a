// The TFLite custom ops the lowbit delegate knows, behind one small interface.
//
// The delegate kernel does not hand TfLiteTensor structs to the ops: it gives
// them TensorRefs, which point either at a runtime tensor or at scratch storage
// the delegate owns for tensors that live entirely inside a delegated partition
// (the runtime does not allocate those). So an op is written once and works
// whether its neighbours are delegated too or not.
//
// Adding an op: write its entry in the op contract table
// (core/op_contract.cc) and its options reader (core/op_options.h), implement
// lowbit::tflite::Op, write a factory that reads the options through
// FlexOptionSource, and add one line to the table in op_registry.cc.
#ifndef LOWBIT_TFLITE_OP_REGISTRY_H_
#define LOWBIT_TFLITE_OP_REGISTRY_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "custom_ops/core/int8_io.h"
#include "custom_ops/core/op_contract.h"
#include "custom_ops/core/types.h"
#include "custom_ops/tflite/flexbuffer_reader.h"
#include "custom_ops/tflite/tflite_abi.h"

namespace lowbit {
namespace tflite {

// What an op sees of one tensor. `data` may be null during Prepare (arena
// tensors are allocated afterwards); ops must check it in Eval.
struct TensorRef {
  TfLiteType type = kTfLiteNoType;
  const int* dims = nullptr;
  int rank = 0;
  void* data = nullptr;
  std::size_t bytes = 0;
  const char* name = "";
  bool present = false;  // false for an optional (-1) input
  // A read-only constant of the model file (kTfLiteMmapRo): its data never
  // changes while the interpreter lives.
  bool constant = false;
  // The tensor's affine quantization (int8 tensors): how many scales it
  // holds (0: not quantized, 1: per tensor, more: per channel), and the
  // first scale and zero point.
  int num_scales = 0;
  float scale = 0.0f;
  std::int64_t zero_point = 0;
};

// The per-tensor quantization of an INT8 tensor `t` named `what` ("input",
// "output", "residual"), checked: quantized at all, per tensor (one scale),
// scale finite and > 0, zero point in [-128, 127] (core/int8_io.h).
Status TensorInt8Quantization(const char* what, const TensorRef& t, Int8Quantization* q);

// Type and shape an op will write to one of its outputs.
struct OutputSpec {
  TfLiteType type = kTfLiteNoType;
  std::vector<int> dims;
};

class Op {
 public:
  virtual ~Op() = default;

  // Validates inputs (types and shapes, not data) and sets the type and shape
  // of every output. Called whenever input shapes may have changed.
  virtual Status Prepare(const std::vector<TensorRef>& inputs,
                         std::size_t num_outputs,
                         std::vector<OutputSpec>* outputs) = 0;

  // Computes the outputs. Inputs and outputs have the types and shapes accepted
  // and announced by the last Prepare; data pointers must still be checked.
  virtual Status Eval(const std::vector<TensorRef>& inputs,
                      const std::vector<TensorRef>& outputs,
                      ParallelExecutor& executor) = 0;
};

// Builds an op from its custom_options bytes (a FlexBuffer map).
using OpFactory = Status (*)(const std::uint8_t* options, std::size_t size,
                             std::unique_ptr<Op>* op);

struct OpEntry {
  const char* custom_name;  // the TFLite custom_code
  OpFactory factory;
};

// The op with this custom_code, or nullptr.
const OpEntry* FindOp(const char* custom_name);

// Factories, one per op (defined next to each op).
Status CreateBconv2dOp(const std::uint8_t* options, std::size_t size,
                       std::unique_ptr<Op>* op);
Status CreateBgemmOp(const std::uint8_t* options, std::size_t size, std::unique_ptr<Op>* op);
Status CreateBMaxPool2dOp(const std::uint8_t* options, std::size_t size,
                          std::unique_ptr<Op>* op);
Status CreateMultibitConv2dOp(const std::uint8_t* options, std::size_t size,
                              std::unique_ptr<Op>* op);
Status CreateFastfoodOp(const std::uint8_t* options, std::size_t size,
                        std::unique_ptr<Op>* op);
Status CreateBDepthwiseConv2dOp(const std::uint8_t* options, std::size_t size,
                                std::unique_ptr<Op>* op);

// Builtin nodes the delegate may claim (delegate.cc): an int8 CONV_2D with
// at most kInt8ConvMaxInputChannels input channels, where the CPU has AVX-512
// VNNI (int8_conv2d_op.cc says what it accepts). An error means "leave the
// node to TFLite", never a failure of the model.
constexpr int kInt8ConvMaxInputChannels = 8;
Status CreateInt8Conv2dBuiltinOp(TfLiteContext* context, const TfLiteNode* node,
                                 std::unique_ptr<Op>* op);

// Helpers shared by the ops. Their messages name the key or value; each op
// prefixes its own name.
std::string ShapeString(const TensorRef& t);
// Parses custom_options into a FlexBuffer map (missing or corrupt -> error).
Status ParseOptions(const std::uint8_t* options, std::size_t size, flex::Map* map);
// A FlexBuffer options map as the source the core reads an op's options from
// (core/op_options.h: Read*Options, which validate them against the op
// contract table). Unknown keys are ignored.
class FlexOptionSource final : public contract::OptionSource {
 public:
  explicit FlexOptionSource(const flex::Map& map) : map_(map) {}
  bool Has(const char* key) const override;
  Status GetInt(const char* key, std::int64_t* out) const override;
  Status GetString(const char* key, std::string* out) const override;

 private:
  const flex::Map& map_;
};
// What Eval checks before touching data: input i (named names[i]) has data
// and at least need[i] bytes, except that need[i] == 0 marks an input allowed
// to be empty (no data required); the output has data, type `out_type` and at
// least `out_bytes` bytes. Messages carry no op name (the caller prefixes it).
Status CheckEvalBuffers(const std::vector<TensorRef>& inputs, const char* const* names,
                        const std::size_t* need, const TensorRef& output, TfLiteType out_type,
                        std::size_t out_bytes);
// Bytes of `count` 4-byte elements, or 0 on overflow (never a valid size for
// the tensors the ops check, which are all non-empty: an op whose batch is
// empty sizes its buffers for a batch of one; the delegate skips Eval then).
std::size_t Bytes4(std::int64_t count);
// The same for 1-byte (int8) elements.
std::size_t Bytes1(std::int64_t count);
const char* TypeName(TfLiteType type);

}  // namespace tflite
}  // namespace lowbit

#endif  // LOWBIT_TFLITE_OP_REGISTRY_H_
