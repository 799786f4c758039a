// The lowbit external delegate: how our TFLite kernels get into an unmodified
// TFLite interpreter.
//
// The PyPI TFLite runtimes cannot register custom kernels from outside, but they
// can load an external delegate (tflite_plugin_create_delegate). Its Prepare
// walks the execution plan, claims every CUSTOM node whose custom_code is one of
// ours (op_registry.cc) and, where Int8Conv2DHasFastPath() (x86 with AVX-512
// VNNI, Arm NEON), the int8 CONV_2D
// builtins over few input channels (int8_conv2d_op.cc; option
// int8_builtin_convs), and asks the runtime to replace each connected group of
// claimed nodes by one delegate kernel (a "partition"). The partition kernel
// runs its nodes in order; tensors that are produced and consumed only inside a
// partition are not allocated by the runtime, so the kernel owns storage for
// them. Every other op (float convs, pooling, ...) stays with the runtime and
// its default XNNPACK delegate.
//
// Nothing here may throw across the C boundary or crash on a malformed model:
// every callback catches exceptions and reports errors via context->ReportError.
#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "custom_ops/core/thread_pool.h"
#include "custom_ops/core/types.h"
#include "custom_ops/tflite/op_registry.h"
#include "custom_ops/tflite/tflite_abi.h"

namespace lowbit {
namespace tflite {
namespace {

constexpr int kMaxThreads = 1024;

// Everything one delegate instance owns. `delegate` is what the runtime sees;
// its data_ points back here.
struct DelegateState {
  TfLiteDelegate delegate;
  int requested_threads = 0;  // 0: use the interpreter's recommended_num_threads
  // Debug option "check_nan": fail an op whose float input (input 0) holds a
  // NaN instead of binarising it as +1 (see FindNaN).
  bool check_nan = false;
  // Option "int8_builtin_convs": claim the int8 CONV_2D builtins our kernel
  // runs faster than XNNPACK (CreateInt8Conv2dBuiltinOp); "0" leaves every
  // builtin to TFLite.
  bool int8_builtin_convs = true;
  std::mutex pool_mutex;      // guards creation of `pool`
  std::unique_ptr<ThreadPool> pool;
  // A ThreadPool runs one ParallelFor at a time. If two interpreters sharing
  // this delegate run concurrently, the one that does not get the pool runs
  // its kernels on its own thread.
  std::mutex pool_in_use;
};

// Messages may quote bytes from the model (option strings, tensor names); the
// Python runtimes decode them as UTF-8, so anything but printable ASCII is
// escaped as \xNN.
std::string Printable(const std::string& text) {
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(text.size());
  for (unsigned char ch : text) {
    if (ch >= 0x20 && ch < 0x7f) {
      out += static_cast<char>(ch);
    } else {
      out += "\\x";
      out += kHex[ch >> 4];
      out += kHex[ch & 15];
    }
  }
  return out;
}

void Report(TfLiteContext* context, const std::string& message) {
  if (context != nullptr && context->ReportError != nullptr) {
    context->ReportError(context, "%s\n", Printable(message).c_str());
  }
}

// True when every tensor in `refs` has a zero dimension (no element).
bool AllEmpty(const std::vector<TensorRef>& refs) {
  for (const TensorRef& t : refs) {
    if (std::find(t.dims, t.dims + t.rank, 0) == t.dims + t.rank) return false;
  }
  return !refs.empty();
}

// Index of the first NaN of a float32 tensor, -1 if none (or not float32).
std::int64_t FindNaN(const TensorRef& t) {
  if (t.type != kTfLiteFloat32 || t.data == nullptr) return -1;
  const auto* values = static_cast<const float*>(t.data);
  const std::int64_t count = static_cast<std::int64_t>(t.bytes / sizeof(float));
  for (std::int64_t i = 0; i < count; ++i) {
    if (values[i] != values[i]) return i;
  }
  return -1;
}

std::vector<int> ToVector(const TfLiteIntArray* array) {
  std::vector<int> v;
  if (array == nullptr || array->size <= 0) return v;
  v.assign(array->data, array->data + array->size);
  return v;
}

// Tensor storage owned by a partition (a tensor internal to it).
struct InternalTensor {
  TfLiteType type = kTfLiteNoType;
  std::vector<int> dims;
  std::vector<std::uint64_t> storage;  // 8-byte aligned
  std::size_t bytes = 0;
};

struct NodeRecord {
  int node_index = -1;
  std::string name;
  std::unique_ptr<Op> op;
  std::vector<int> inputs, outputs;
  // Reused between calls so that Eval does not allocate.
  std::vector<TensorRef> input_refs, output_refs;
  std::vector<OutputSpec> specs;
};

// One delegate kernel: a connected group of our nodes.
struct PartitionKernel {
  DelegateState* state = nullptr;
  std::string init_error;  // reported by Prepare; init itself cannot report well
  std::vector<NodeRecord> nodes;
  std::map<int, InternalTensor> internal;

  std::string Where(const NodeRecord& n) const {
    return "lowbit delegate: node " + std::to_string(n.node_index) + " (" + n.name + "): ";
  }

  // The affine quantization of `t`: its scales and first zero point (the
  // per-tensor `params` of an older runtime are not read: every runtime we
  // support fills `quantization`).
  static void ReadQuantization(const TfLiteTensor& t, TensorRef* ref) {
    if (t.quantization.type != kTfLiteAffineQuantization || t.quantization.params == nullptr) {
      return;
    }
    const auto* affine = static_cast<const TfLiteAffineQuantization*>(t.quantization.params);
    if (affine->scale == nullptr || affine->scale->size <= 0) return;
    ref->num_scales = affine->scale->size;
    ref->scale = affine->scale->data[0];
    ref->zero_point = affine->zero_point != nullptr && affine->zero_point->size > 0
                          ? affine->zero_point->data[0]
                          : 0;
  }

  // Fills `ref` for tensor `index`. Internal tensors point at our storage.
  bool MakeRef(TfLiteContext* context, int index, TensorRef* ref, std::string* error) {
    *ref = TensorRef{};
    if (index == kTfLiteOptionalTensor) return true;  // present = false
    if (index < 0 || static_cast<std::size_t>(index) >= context->tensors_size ||
        context->tensors == nullptr) {
      *error = "tensor index " + std::to_string(index) + " out of range (" +
               std::to_string(context->tensors_size) + " tensors)";
      return false;
    }
    // The quantization is the model's, for internal tensors too.
    ReadQuantization(context->tensors[index], ref);
    auto it = internal.find(index);
    if (it != internal.end()) {
      InternalTensor& t = it->second;
      ref->type = t.type;
      ref->dims = t.dims.data();
      ref->rank = static_cast<int>(t.dims.size());
      ref->data = t.storage.empty() ? nullptr : t.storage.data();
      ref->bytes = t.bytes;
      ref->name = "(internal)";
      ref->present = true;
      return true;
    }
    const TfLiteTensor& t = context->tensors[index];
    if (t.dims == nullptr || t.dims->size < 0 || t.dims->size > 16) {
      *error = "tensor " + std::to_string(index) + " has no valid shape";
      return false;
    }
    ref->type = t.type;
    ref->dims = t.dims->data;
    ref->rank = t.dims->size;
    ref->data = t.data.data;
    ref->bytes = t.bytes;
    ref->name = t.name != nullptr ? t.name : "";
    ref->present = true;
    ref->constant = t.allocation_type == kTfLiteMmapRo;
    return true;
  }

  bool MakeRefs(TfLiteContext* context, NodeRecord& n, bool outputs_too,
                std::string* error) {
    n.input_refs.resize(n.inputs.size());
    for (std::size_t i = 0; i < n.inputs.size(); ++i) {
      if (!MakeRef(context, n.inputs[i], &n.input_refs[i], error)) return false;
    }
    if (!outputs_too) return true;
    n.output_refs.resize(n.outputs.size());
    for (std::size_t i = 0; i < n.outputs.size(); ++i) {
      if (!MakeRef(context, n.outputs[i], &n.output_refs[i], error)) return false;
      if (!n.output_refs[i].present) {
        *error = "output " + std::to_string(i) + " is missing";
        return false;
      }
    }
    return true;
  }

  TfLiteStatus Prepare(TfLiteContext* context) {
    if (!init_error.empty()) {
      Report(context, init_error);
      return kTfLiteError;
    }
    for (NodeRecord& n : nodes) {
      std::string error;
      if (!MakeRefs(context, n, /*outputs_too=*/false, &error)) {
        Report(context, Where(n) + error);
        return kTfLiteError;
      }
      Status s = n.op->Prepare(n.input_refs, n.outputs.size(), &n.specs);
      if (!s.ok) {
        Report(context, Where(n) + s.message);
        return kTfLiteError;
      }
      if (n.specs.size() != n.outputs.size()) {
        Report(context, Where(n) + "op announced the wrong number of outputs");
        return kTfLiteError;
      }
      for (std::size_t i = 0; i < n.outputs.size(); ++i) {
        if (SetOutput(context, n, n.outputs[i], n.specs[i]) != kTfLiteOk) {
          return kTfLiteError;
        }
      }
    }
    return kTfLiteOk;
  }

  TfLiteStatus SetOutput(TfLiteContext* context, const NodeRecord& n, int index,
                         const OutputSpec& spec) {
    std::size_t elements = 1;
    for (int d : spec.dims) {
      if (d < 0 || (d > 0 && elements > SIZE_MAX / 8 / static_cast<std::size_t>(d))) {
        Report(context, Where(n) + "output shape overflows");
        return kTfLiteError;
      }
      elements *= static_cast<std::size_t>(d);
    }
    auto it = internal.find(index);
    if (it != internal.end()) {
      if (spec.type != kTfLiteFloat32 && spec.type != kTfLiteInt32 && spec.type != kTfLiteInt8) {
        Report(context, Where(n) + "unsupported internal tensor type");
        return kTfLiteError;
      }
      InternalTensor& t = it->second;
      t.type = spec.type;
      t.dims = spec.dims;
      t.bytes = elements * (spec.type == kTfLiteInt8 ? 1 : 4);
      t.storage.resize((t.bytes + 7) / 8);
      return kTfLiteOk;
    }
    if (index < 0 || static_cast<std::size_t>(index) >= context->tensors_size) {
      Report(context, Where(n) + "output tensor index " + std::to_string(index) +
                          " out of range");
      return kTfLiteError;
    }
    TfLiteTensor* t = &context->tensors[index];
    if (t->type != spec.type) {
      Report(context, Where(n) + "output tensor '" + (t->name ? t->name : "") +
                          "' has type " + TypeName(t->type) + ", expected " +
                          TypeName(spec.type));
      return kTfLiteError;
    }
    const int rank = static_cast<int>(spec.dims.size());
    if (t->dims != nullptr && t->dims->size == rank &&
        std::memcmp(t->dims->data, spec.dims.data(), sizeof(int) * rank) == 0) {
      return kTfLiteOk;  // already the right shape
    }
    if (context->ResizeTensor == nullptr) {
      Report(context, Where(n) + "runtime offers no ResizeTensor");
      return kTfLiteError;
    }
    // ResizeTensor takes ownership of the array and frees it with free(), as
    // TfLiteIntArrayFree does; allocate it the way TfLiteIntArrayCreate does.
    auto* shape = static_cast<TfLiteIntArray*>(
        std::malloc(sizeof(TfLiteIntArray) + sizeof(int) * (rank > 0 ? rank : 1)));
    if (shape == nullptr) {
      Report(context, Where(n) + "out of memory");
      return kTfLiteError;
    }
    shape->size = rank;
    for (int i = 0; i < rank; ++i) shape->data[i] = spec.dims[i];
    if (context->ResizeTensor(context, t, shape) != kTfLiteOk) {
      Report(context, Where(n) + "could not resize the output tensor");
      return kTfLiteError;
    }
    return kTfLiteOk;
  }

  TfLiteStatus Invoke(TfLiteContext* context) {
    InlineExecutor inline_executor;
    ParallelExecutor* executor = &inline_executor;
    // A pool of one thread runs everything on the caller, as the inline
    // executor does: no lock to take then (its two atomic read-modify-writes
    // were ~1% of a TFLite invoke of a 1024 -> 1024 binary dense layer).
    std::unique_lock<std::mutex> lock;
    if (state->pool != nullptr && state->pool->num_threads() > 1) {
      lock = std::unique_lock<std::mutex>(state->pool_in_use, std::try_to_lock);
      if (lock.owns_lock()) executor = state->pool.get();
    }
    for (NodeRecord& n : nodes) {
      std::string error;
      if (!MakeRefs(context, n, /*outputs_too=*/true, &error)) {
        Report(context, Where(n) + error);
        return kTfLiteError;
      }
      // An op whose output holds no element (an empty batch, which the ops
      // accept as TF's do) has nothing to read or write.
      if (AllEmpty(n.output_refs)) continue;
      if (state->check_nan && !n.input_refs.empty()) {
        const std::int64_t at = FindNaN(n.input_refs[0]);
        if (at >= 0) {
          Report(context, Where(n) + "input element " + std::to_string(at) +
                              " is NaN (check_nan is on: the lowbit ops binarise NaN as +1 "
                              "where Keras would propagate it)");
          return kTfLiteError;
        }
      }
      Status s = n.op->Eval(n.input_refs, n.output_refs, *executor);
      if (!s.ok) {
        Report(context, Where(n) + s.message);
        return kTfLiteError;
      }
    }
    return kTfLiteOk;
  }
};

// Builds the partition kernel from the TfLiteDelegateParams the runtime passes.
PartitionKernel* BuildPartition(TfLiteContext* context,
                                const TfLiteDelegateParams* params) {
  auto kernel = std::make_unique<PartitionKernel>();
  if (params == nullptr || params->delegate == nullptr ||
      params->delegate->data_ == nullptr || params->nodes_to_replace == nullptr) {
    kernel->init_error = "lowbit delegate: runtime passed no delegate parameters";
    return kernel.release();
  }
  kernel->state = static_cast<DelegateState*>(params->delegate->data_);
  std::set<int> external_outputs;
  for (int t : ToVector(params->output_tensors)) external_outputs.insert(t);

  for (int node_index : ToVector(params->nodes_to_replace)) {
    TfLiteNode* node = nullptr;
    TfLiteRegistration* reg = nullptr;
    if (context->GetNodeAndRegistration(context, node_index, &node, &reg) != kTfLiteOk ||
        node == nullptr || reg == nullptr) {
      kernel->init_error = "lowbit delegate: cannot read node " + std::to_string(node_index);
      return kernel.release();
    }
    NodeRecord rec;
    rec.node_index = node_index;
    rec.inputs = ToVector(node->inputs);
    rec.outputs = ToVector(node->outputs);
    Status s;
    if (reg->builtin_code == kTfLiteBuiltinConv2d) {
      rec.name = "CONV_2D";
      s = CreateInt8Conv2dBuiltinOp(context, node, &rec.op);
    } else {
      const OpEntry* entry = FindOp(reg->custom_name);
      if (entry == nullptr) {
        kernel->init_error = "lowbit delegate: node " + std::to_string(node_index) +
                             " is not a lowbit op";
        return kernel.release();
      }
      rec.name = entry->custom_name;
      const int size = node->custom_initial_data_size;
      s = entry->factory(static_cast<const std::uint8_t*>(node->custom_initial_data),
                         size > 0 ? static_cast<std::size_t>(size) : 0, &rec.op);
    }
    if (!s.ok) {
      kernel->init_error = kernel->Where(rec) + s.message;
      return kernel.release();
    }
    kernel->nodes.push_back(std::move(rec));
  }
  // Tensors written inside the partition that nobody outside reads.
  for (const NodeRecord& n : kernel->nodes) {
    for (int t : n.outputs) {
      if (t >= 0 && external_outputs.count(t) == 0) kernel->internal[t] = InternalTensor{};
    }
  }
  return kernel.release();
}

// ---- TfLiteRegistration callbacks of the partition kernel ----

void* KernelInit(TfLiteContext* context, const char* buffer, std::size_t /*length*/) {
  try {
    return BuildPartition(context, reinterpret_cast<const TfLiteDelegateParams*>(buffer));
  } catch (...) {
    return nullptr;  // Prepare reports the missing kernel
  }
}

void KernelFree(TfLiteContext* /*context*/, void* buffer) {
  delete static_cast<PartitionKernel*>(buffer);
}

// Runs `step` ("Prepare" or "Invoke") of the node's partition kernel, turning
// a missing kernel and any C++ exception into an error report: nothing may
// unwind into the runtime's C code.
template <typename Step>
TfLiteStatus RunGuarded(TfLiteContext* context, TfLiteNode* node, const char* name, Step step) {
  auto* kernel = node != nullptr ? static_cast<PartitionKernel*>(node->user_data) : nullptr;
  if (kernel == nullptr) {
    Report(context, "lowbit delegate: kernel initialisation failed");
    return kTfLiteError;
  }
  try {
    return step(kernel);
  } catch (const std::bad_alloc&) {
    Report(context, std::string("lowbit delegate: out of memory in ") + name +
                        " of the lowbit ops (are the input shapes, e.g. the batch, too large?)");
  } catch (const std::exception& e) {
    Report(context, std::string("lowbit delegate: ") + e.what());
  } catch (...) {
    Report(context, std::string("lowbit delegate: unknown error in ") + name);
  }
  return kTfLiteError;
}

TfLiteStatus KernelPrepare(TfLiteContext* context, TfLiteNode* node) {
  return RunGuarded(context, node, "Prepare",
                    [context](PartitionKernel* k) { return k->Prepare(context); });
}

TfLiteStatus KernelInvoke(TfLiteContext* context, TfLiteNode* node) {
  return RunGuarded(context, node, "Invoke",
                    [context](PartitionKernel* k) { return k->Invoke(context); });
}

// ---- the delegate ----

// Plausibility checks of our declarations against the running runtime, done
// before anything is claimed. The runtimes do not export their layout, so this
// looks for the symptoms a wrong TfLiteTensor size or field offset would show:
// enum fields out of range, bools that are not 0/1, absurd ranks. Where the
// runtime offers context->GetTensor (the PyPI runtimes leave it null), its
// answer must also be the address we compute.
bool AbiLooksRight(TfLiteContext* context, std::string* problem) {
  if (context->tensors_size > 0 && context->tensors == nullptr) {
    *problem = "context has tensors but no tensor array";
    return false;
  }
  for (std::size_t i = 0; i < context->tensors_size; ++i) {
    const TfLiteTensor& t = context->tensors[i];
    unsigned char stale, variable;
    std::memcpy(&stale, &t.data_is_stale, 1);
    std::memcpy(&variable, &t.is_variable, 1);
    if (static_cast<unsigned>(t.type) > 63 || static_cast<unsigned>(t.allocation_type) > 31 ||
        stale > 1 || variable > 1 || (t.dims != nullptr && (t.dims->size < 0 || t.dims->size > 64))) {
      *problem = "tensor " + std::to_string(i) + " does not look like a TfLiteTensor";
      return false;
    }
  }
  if (context->tensors_size > 0 && context->GetTensor != nullptr) {
    const int last = static_cast<int>(context->tensors_size - 1);
    if (context->GetTensor(context, last) != &context->tensors[last]) {
      *problem = "context->GetTensor disagrees with sizeof(TfLiteTensor)";
      return false;
    }
  }
  return true;
}

void EnsurePool(TfLiteContext* context, DelegateState* state) {
  std::lock_guard<std::mutex> guard(state->pool_mutex);
  if (state->pool != nullptr) return;
  int threads = state->requested_threads;
  if (threads <= 0) threads = context->recommended_num_threads;
  if (threads <= 0) threads = 1;
  if (threads > kMaxThreads) threads = kMaxThreads;
  // More workers than hardware threads cannot make the kernels faster (their
  // chunks are equal-cost and CPU-bound) but each costs a stack and a wakeup:
  // num_threads=1024 on a 2-core machine would start 1,023 threads per
  // interpreter. (hardware_concurrency() is 0 where unknown: no cap then.)
  const unsigned hardware = std::thread::hardware_concurrency();
  if (hardware > 0 && static_cast<unsigned>(threads) > hardware) {
    threads = static_cast<int>(hardware);
  }
  try {
    state->pool = std::make_unique<ThreadPool>(threads);
  } catch (...) {
    state->pool.reset();  // kernels then run on the interpreter's thread
  }
}

TfLiteStatus DelegatePrepare(TfLiteContext* context, TfLiteDelegate* delegate) {
  try {
    if (context == nullptr || delegate == nullptr || delegate->data_ == nullptr) {
      return kTfLiteDelegateError;
    }
    if (context->GetExecutionPlan == nullptr || context->GetNodeAndRegistration == nullptr ||
        context->ReplaceNodeSubsetsWithDelegateKernels == nullptr) {
      Report(context, "lowbit delegate: runtime context lacks the delegate API");
      return kTfLiteDelegateError;
    }
    std::string problem;
    if (!AbiLooksRight(context, &problem)) {
      Report(context, "lowbit delegate: the TFLite ABI of this runtime differs from "
                      "custom_ops/tflite/tflite_abi.h (" + problem + "); refusing to run");
      return kTfLiteDelegateError;
    }
    auto* state = static_cast<DelegateState*>(delegate->data_);

    TfLiteIntArray* plan = nullptr;
    if (context->GetExecutionPlan(context, &plan) != kTfLiteOk || plan == nullptr) {
      Report(context, "lowbit delegate: cannot read the execution plan");
      return kTfLiteDelegateError;
    }
    std::vector<int> claimed;
    for (int i = 0; i < plan->size; ++i) {
      const int node_index = plan->data[i];
      TfLiteNode* node = nullptr;
      TfLiteRegistration* reg = nullptr;
      if (context->GetNodeAndRegistration(context, node_index, &node, &reg) != kTfLiteOk ||
          node == nullptr || reg == nullptr) {
        continue;
      }
      if (node->delegate != nullptr) continue;
      if (reg->builtin_code == kTfLiteBuiltinCustom) {
        if (FindOp(reg->custom_name) != nullptr) claimed.push_back(node_index);
      } else if (reg->builtin_code == kTfLiteBuiltinConv2d && state->int8_builtin_convs) {
        // Claimed only if our op takes it (BuildPartition makes it again:
        // the plan is cheap, a few KB of weights).
        std::unique_ptr<Op> probe;
        if (CreateInt8Conv2dBuiltinOp(context, node, &probe).ok) claimed.push_back(node_index);
      }
    }
    if (claimed.empty()) return kTfLiteOk;
    EnsurePool(context, state);

    TfLiteRegistration registration;
    std::memset(&registration, 0, sizeof(registration));
    registration.init = &KernelInit;
    registration.free = &KernelFree;
    registration.prepare = &KernelPrepare;
    registration.invoke = &KernelInvoke;
    registration.builtin_code = kTfLiteBuiltinDelegate;
    registration.custom_name = "LowbitDelegate";
    registration.version = 1;

    // The runtime does not take ownership of this list.
    auto* nodes = static_cast<TfLiteIntArray*>(
        std::malloc(sizeof(TfLiteIntArray) + sizeof(int) * claimed.size()));
    if (nodes == nullptr) return kTfLiteDelegateError;
    nodes->size = static_cast<int>(claimed.size());
    std::memcpy(nodes->data, claimed.data(), sizeof(int) * claimed.size());
    const TfLiteStatus status = context->ReplaceNodeSubsetsWithDelegateKernels(
        context, registration, nodes, delegate);
    std::free(nodes);
    return status;
  } catch (...) {
    Report(context, "lowbit delegate: error while preparing the graph");
    return kTfLiteDelegateError;
  }
}

void ReportTo(void (*report_error)(const char*), const std::string& message) {
  if (report_error != nullptr) report_error(Printable(message).c_str());
}

// Parses an integer option value; the whole string must be a number.
bool ParseInt(const char* text, long* value) {
  if (text == nullptr || *text == '\0') return false;
  char* end = nullptr;
  errno = 0;
  const long v = std::strtol(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0') return false;
  *value = v;
  return true;
}

}  // namespace
}  // namespace tflite
}  // namespace lowbit

// ---- external delegate entry points (tensorflow/lite/delegates/external) ----
//
// Options (all values are strings):
//   num_threads   threads for the lowbit kernels; "0"/"-1" or absent: the
//                 interpreter's recommended_num_threads (1 if it has none).
//   check_nan     "1": fail an op whose float input holds a NaN.
//   int8_builtin_convs  "1" (default): claim the int8 CONV_2D builtins over
//                 few input channels where Int8Conv2DHasFastPath()
//                 (int8_conv2d_op.cc); "0": leave them to TFLite / XNNPACK.
extern "C" __attribute__((visibility("default"))) TfLiteDelegate*
tflite_plugin_create_delegate(char** options_keys, char** options_values,
                              std::size_t num_options,
                              void (*report_error)(const char*)) {
  using namespace lowbit::tflite;  // NOLINT
  try {
    // Python's loader declares this argument as a C int; only its low 32 bits
    // are meaningful.
    num_options = static_cast<std::uint32_t>(num_options);
    auto state = std::make_unique<DelegateState>();
    for (std::size_t i = 0; i < num_options; ++i) {
      const char* key = options_keys != nullptr ? options_keys[i] : nullptr;
      const char* value = options_values != nullptr ? options_values[i] : nullptr;
      if (key == nullptr || value == nullptr) {
        ReportTo(report_error, "lowbit delegate: null option key or value");
        return nullptr;
      }
      if (std::strcmp(key, "num_threads") == 0) {
        long threads = 0;
        if (!ParseInt(value, &threads) || threads < -1 || threads > kMaxThreads) {
          ReportTo(report_error, std::string("lowbit delegate: num_threads must be an "
                                             "integer in [-1, ") +
                                     std::to_string(kMaxThreads) + "], got '" + value + "'");
          return nullptr;
        }
        state->requested_threads = threads > 0 ? static_cast<int>(threads) : 0;
      } else if (std::strcmp(key, "check_nan") == 0) {
        if (std::strcmp(value, "0") != 0 && std::strcmp(value, "1") != 0) {
          ReportTo(report_error, std::string("lowbit delegate: check_nan must be '0' or '1', "
                                             "got '") + value + "'");
          return nullptr;
        }
        state->check_nan = value[0] == '1';
      } else if (std::strcmp(key, "int8_builtin_convs") == 0) {
        if (std::strcmp(value, "0") != 0 && std::strcmp(value, "1") != 0) {
          ReportTo(report_error, std::string("lowbit delegate: int8_builtin_convs must be '0' "
                                             "or '1', got '") + value + "'");
          return nullptr;
        }
        state->int8_builtin_convs = value[0] == '1';
      } else {
        ReportTo(report_error, std::string("lowbit delegate: unknown option '") + key +
                                   "' (known options: num_threads, check_nan, int8_builtin_convs)");
        return nullptr;
      }
    }
    std::memset(&state->delegate, 0, sizeof(state->delegate));
    state->delegate.data_ = state.get();
    state->delegate.Prepare = &DelegatePrepare;
    state->delegate.flags = kTfLiteDelegateFlagsAllowDynamicTensors;
    DelegateState* raw = state.release();
    return &raw->delegate;
  } catch (...) {
    ReportTo(report_error, "lowbit delegate: could not create the delegate");
    return nullptr;
  }
}

extern "C" __attribute__((visibility("default"))) void tflite_plugin_destroy_delegate(
    TfLiteDelegate* delegate) {
  if (delegate == nullptr) return;
  delete static_cast<lowbit::tflite::DelegateState*>(delegate->data_);
}
