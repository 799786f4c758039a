// The subset of the TensorFlow Lite C ABI that the lowbit delegate relies on.
//
// The TFLite runtimes on PyPI (tf.lite inside the tensorflow wheel,
// ai-edge-litert, tflite-runtime) export none of their C/C++ symbols and ship no
// headers, so this library cannot include tensorflow/lite/core/c/common.h. These
// are our own declarations of the same structs, written from the public C API
// documentation of tensorflow/lite/core/c/common.h and c_api_types.h.
//
// Rules that keep this compatible with every runtime we load into:
//   * Upstream only ever APPENDS fields to these structs ("semi-ABI stable").
//     We declare the newest layout of every struct the runtime allocates and we
//     only read (TfLiteContext, TfLiteTensor, TfLiteNode): a prefix is enough.
//   * Structs WE allocate and hand to the runtime are declared in full and
//     zero-initialised: TfLiteDelegate (returned by the plugin entry point) and
//     TfLiteRegistration (passed BY VALUE to ReplaceNodeSubsetsWithDelegateKernels).
//   * We call no runtime function except through the function pointers in
//     TfLiteContext, because the runtimes do not export any symbol.
//   * Memory handed to the runtime that it frees (the TfLiteIntArray passed to
//     ResizeTensor) is allocated with malloc, which is what the runtime's
//     TfLiteIntArrayCreate/TfLiteIntArrayFree use.
//
// The static_asserts at the bottom pin the LP64 offsets computed from upstream's
// layout so that an accidental edit of this file is caught at compile time; the
// end-to-end tests (tests/tflite/test_tflite_runtime.py) check the declarations against
// the real runtimes, and the delegate cross-checks sizeof(TfLiteTensor) against
// context->GetTensor at run time where the runtime provides it.
#ifndef LOWBIT_TFLITE_TFLITE_ABI_H_
#define LOWBIT_TFLITE_TFLITE_ABI_H_

#include <cstddef>
#include <cstdint>

extern "C" {

typedef enum TfLiteStatus {
  kTfLiteOk = 0,
  kTfLiteError = 1,
  kTfLiteDelegateError = 2,
  kTfLiteApplicationError = 3,
  kTfLiteDelegateDataNotFound = 4,
  kTfLiteDelegateDataWriteError = 5,
  kTfLiteDelegateDataReadError = 6,
  kTfLiteUnresolvedOps = 7,
  kTfLiteCancelled = 8,
  kTfLiteOutputShapeNotKnown = 9,
} TfLiteStatus;

typedef enum TfLiteType {
  kTfLiteNoType = 0,
  kTfLiteFloat32 = 1,
  kTfLiteInt32 = 2,
  kTfLiteUInt8 = 3,
  kTfLiteInt64 = 4,
  kTfLiteString = 5,
  kTfLiteBool = 6,
  kTfLiteInt16 = 7,
  kTfLiteComplex64 = 8,
  kTfLiteInt8 = 9,
  kTfLiteFloat16 = 10,
  kTfLiteFloat64 = 11,
  kTfLiteComplex128 = 12,
  kTfLiteUInt64 = 13,
  kTfLiteResource = 14,
  kTfLiteVariant = 15,
  kTfLiteUInt32 = 16,
  kTfLiteUInt16 = 17,
  kTfLiteInt4 = 18,
  kTfLiteBFloat16 = 19,
  kTfLiteInt2 = 20,
  kTfLiteUInt4 = 21,
} TfLiteType;

// Builtin operator codes we need (schema.fbs BuiltinOperator).
enum {
  kTfLiteBuiltinConv2d = 3,
  kTfLiteBuiltinCustom = 32,
  kTfLiteBuiltinDelegate = 51,
};

// builtin_data of a CONV_2D node (tensorflow/lite/core/c/builtin_op_data.h:
// TfLiteConvParams; its enums are int-sized). Newer runtimes append fields
// (quantized_bias_type); the runtime allocates it and we read this prefix.
typedef enum {
  kTfLitePaddingUnknown = 0,
  kTfLitePaddingSame,
  kTfLitePaddingValid,
} TfLitePadding;

typedef enum {
  kTfLiteActNone = 0,
  kTfLiteActRelu,
  kTfLiteActReluN1To1,  // min(max(-1, x), 1)
  kTfLiteActRelu6,      // min(max(0, x), 6)
  kTfLiteActTanh,
  kTfLiteActSignBit,
  kTfLiteActSigmoid,
} TfLiteFusedActivation;

typedef struct TfLiteConvParams {
  TfLitePadding padding;
  int stride_width;
  int stride_height;
  TfLiteFusedActivation activation;
  int dilation_width_factor;
  int dilation_height_factor;
} TfLiteConvParams;

// Flags of TfLiteDelegate::flags.
enum {
  kTfLiteDelegateFlagsNone = 0,
  kTfLiteDelegateFlagsAllowDynamicTensors = 1,
  kTfLiteDelegateFlagsRequirePropagatedShapes = 2,
  kTfLiteDelegateFlagsPerOperatorProfiling = 4,
};

#define kTfLiteOptionalTensor (-1)

typedef enum TfLiteAllocationType {
  kTfLiteMemNone = 0,
  kTfLiteMmapRo,
  kTfLiteArenaRw,
  kTfLiteArenaRwPersistent,
  kTfLiteDynamic,
  kTfLitePersistentRo,
  kTfLiteCustom,
  kTfLiteVariantObject,
  kTfLiteNonCpu,
} TfLiteAllocationType;

typedef int TfLiteBufferHandle;

// Fixed size list of integers (shapes, tensor index lists). `data` is a
// flexible array member; the runtime allocates it as
// malloc(sizeof(int) * (1 + size)).
typedef struct TfLiteIntArray {
  int size;
  int data[];
} TfLiteIntArray;

typedef struct TfLiteQuantizationParams {
  float scale;
  int32_t zero_point;
} TfLiteQuantizationParams;

// TfLiteQuantizationType: kTfLiteNoQuantization = 0, then
// kTfLiteAffineQuantization = 1, whose params point at a
// TfLiteAffineQuantization (one scale and zero point per tensor, or per
// channel along quantized_dimension).
enum { kTfLiteNoQuantization = 0, kTfLiteAffineQuantization = 1 };

typedef struct TfLiteQuantization {
  int type;  // TfLiteQuantizationType, an int-sized enum upstream
  void* params;
} TfLiteQuantization;

typedef struct TfLiteFloatArray {
  int size;
  float data[];
} TfLiteFloatArray;

typedef struct TfLiteAffineQuantization {
  TfLiteFloatArray* scale;
  TfLiteIntArray* zero_point;
  int32_t quantized_dimension;
} TfLiteAffineQuantization;

typedef union TfLitePtrUnion {
  int32_t* i32;
  float* f;
  char* raw;
  const char* raw_const;
  void* data;
} TfLitePtrUnion;

struct TfLiteContext;
struct TfLiteDelegate;
struct TfLiteRegistration;
struct TfLiteSparsity;
struct TfLiteExternalContext;
struct TfLiteEvalTensor;
struct TfLiteOperator;
struct TfLiteAsyncKernel;
struct TfLiteOpaqueDelegateBuilder;

// The runtime owns these; we read them (and write `data` of nothing).
typedef struct TfLiteTensor {
  TfLiteType type;
  TfLitePtrUnion data;
  TfLiteIntArray* dims;
  TfLiteQuantizationParams params;
  TfLiteAllocationType allocation_type;
  size_t bytes;
  const void* allocation;
  const char* name;
  struct TfLiteDelegate* delegate;
  TfLiteBufferHandle buffer_handle;
  bool data_is_stale;
  bool is_variable;
  TfLiteQuantization quantization;
  struct TfLiteSparsity* sparsity;
  const TfLiteIntArray* dims_signature;
} TfLiteTensor;

typedef struct TfLiteNode {
  TfLiteIntArray* inputs;
  TfLiteIntArray* outputs;
  TfLiteIntArray* intermediates;
  TfLiteIntArray* temporaries;
  void* user_data;
  void* builtin_data;
  const void* custom_initial_data;
  int custom_initial_data_size;
  struct TfLiteDelegate* delegate;
  bool might_have_side_effect;
} TfLiteNode;

// builtin_data of a delegate kernel node, and the `buffer` its init receives.
typedef struct TfLiteDelegateParams {
  struct TfLiteDelegate* delegate;
  TfLiteIntArray* nodes_to_replace;
  TfLiteIntArray* input_tensors;
  TfLiteIntArray* output_tensors;
} TfLiteDelegateParams;

// Passed BY VALUE, so its size and alignment are part of the call ABI. On
// x86_64 and aarch64 a struct this large is passed in memory (by a hidden
// pointer on aarch64) and a runtime with an older, shorter layout just reads a
// prefix. On 32-bit Arm (AAPCS) it is split over r2-r3 and the stack (its
// 8-byte alignment skips r1) and the following arguments come after it, so
// there the layout must match the runtime's exactly.
//
// Checked under qemu-arm (tests/arm/run_emulated.sh armhf): tflite-runtime
// 2.14.0, the last release with armv7l wheels and the only one for Python
// 3.11, HAS the trailing `inplace_operator` field; this full layout runs
// there, and a build without the field crashes (SIGSEGV) in Prepare. For older
// 32-bit runtimes (TFLite < 2.14) build with
// `cmake -DLOWBIT_TFLITE_REGISTRATION_HAS_INPLACE=OFF` (CMake option), which
// drops the field and with it the struct's 8-byte alignment.
#ifndef LOWBIT_TFLITE_REGISTRATION_HAS_INPLACE
#define LOWBIT_TFLITE_REGISTRATION_HAS_INPLACE 1
#endif
typedef struct TfLiteRegistration {
  void* (*init)(struct TfLiteContext* context, const char* buffer, size_t length);
  void (*free)(struct TfLiteContext* context, void* buffer);
  TfLiteStatus (*prepare)(struct TfLiteContext* context, TfLiteNode* node);
  TfLiteStatus (*invoke)(struct TfLiteContext* context, TfLiteNode* node);
  const char* (*profiling_string)(const struct TfLiteContext* context,
                                  const TfLiteNode* node);
  int32_t builtin_code;
  const char* custom_name;
  int version;
  struct TfLiteOperator* registration_external;
  struct TfLiteAsyncKernel* (*async_kernel)(struct TfLiteContext* context,
                                            TfLiteNode* node);
#if LOWBIT_TFLITE_REGISTRATION_HAS_INPLACE
  uint64_t inplace_operator;
#endif
} TfLiteRegistration;

// The runtime owns it. Fields after ReplaceNodeSubsetsWithDelegateKernels /
// recommended_num_threads are declared only so that GetTensor can be reached;
// every function pointer is checked for null before use.
typedef struct TfLiteContext {
  size_t tensors_size;
  TfLiteStatus (*GetExecutionPlan)(struct TfLiteContext* context,
                                   TfLiteIntArray** execution_plan);
  TfLiteTensor* tensors;
  void* impl_;
  TfLiteStatus (*ResizeTensor)(struct TfLiteContext*, TfLiteTensor* tensor,
                               TfLiteIntArray* new_size);
  void (*ReportError)(struct TfLiteContext*, const char* msg, ...);
  TfLiteStatus (*AddTensors)(struct TfLiteContext*, int tensors_to_add,
                             int* first_new_tensor_index);
  TfLiteStatus (*GetNodeAndRegistration)(struct TfLiteContext*, int node_index,
                                         TfLiteNode** node,
                                         TfLiteRegistration** registration);
  TfLiteStatus (*ReplaceNodeSubsetsWithDelegateKernels)(
      struct TfLiteContext*, TfLiteRegistration registration,
      const TfLiteIntArray* nodes_to_replace, struct TfLiteDelegate* delegate);
  int recommended_num_threads;
  struct TfLiteExternalContext* (*GetExternalContext)(struct TfLiteContext*,
                                                      int /*type*/);
  void (*SetExternalContext)(struct TfLiteContext*, int /*type*/,
                             struct TfLiteExternalContext*);
  bool allow_fp32_relax_to_fp16;
  void* profiler;
  void* (*AllocatePersistentBuffer)(struct TfLiteContext* ctx, size_t bytes);
  TfLiteStatus (*AllocateBufferForEval)(struct TfLiteContext* ctx, size_t bytes,
                                        void** ptr);
  TfLiteStatus (*RequestScratchBufferInArena)(struct TfLiteContext* ctx,
                                              size_t bytes, int* buffer_idx);
  void* (*GetScratchBuffer)(struct TfLiteContext* ctx, int buffer_idx);
  TfLiteStatus (*ResizeTensorExplicit)(struct TfLiteContext* ctx,
                                       TfLiteTensor* tensor, int dims,
                                       const int* shape);
  TfLiteStatus (*PreviewDelegatePartitioning)(
      struct TfLiteContext* context, const TfLiteIntArray* nodes_to_replace,
      TfLiteDelegateParams** partition_params_array, int* num_partitions);
  TfLiteTensor* (*GetTensor)(const struct TfLiteContext* context, int tensor_idx);
  // Later fields (GetEvalTensor, GetModelMetadata, AcquireSubgraphContext,
  // ReleaseSubgraphContext) are not used.
} TfLiteContext;

// We allocate it: declared in full, zero-initialised by the creator.
typedef struct TfLiteDelegate {
  void* data_;
  TfLiteStatus (*Prepare)(TfLiteContext* context, struct TfLiteDelegate* delegate);
  TfLiteStatus (*CopyFromBufferHandle)(TfLiteContext* context,
                                       struct TfLiteDelegate* delegate,
                                       TfLiteBufferHandle buffer_handle,
                                       TfLiteTensor* tensor);
  TfLiteStatus (*CopyToBufferHandle)(TfLiteContext* context,
                                     struct TfLiteDelegate* delegate,
                                     TfLiteBufferHandle buffer_handle,
                                     TfLiteTensor* tensor);
  void (*FreeBufferHandle)(TfLiteContext* context, struct TfLiteDelegate* delegate,
                           TfLiteBufferHandle* handle);
  int64_t flags;
  struct TfLiteOpaqueDelegateBuilder* opaque_delegate_builder;
} TfLiteDelegate;

}  // extern "C"

// TfLiteConvParams: six 4-byte fields on every target.
static_assert(sizeof(TfLitePadding) == 4 && sizeof(TfLiteFusedActivation) == 4,
              "TfLiteConvParams enums");
static_assert(offsetof(TfLiteConvParams, activation) == 12, "TfLiteConvParams.activation");
static_assert(offsetof(TfLiteConvParams, dilation_height_factor) == 20,
              "TfLiteConvParams.dilation_height_factor");

// Offsets of upstream's layout on LP64 targets (x86_64, aarch64).
#if defined(__LP64__)
static_assert(sizeof(TfLiteIntArray) == 4, "TfLiteIntArray");
static_assert(offsetof(TfLiteTensor, data) == 8, "TfLiteTensor.data");
static_assert(offsetof(TfLiteTensor, dims) == 16, "TfLiteTensor.dims");
static_assert(offsetof(TfLiteTensor, bytes) == 40, "TfLiteTensor.bytes");
static_assert(offsetof(TfLiteTensor, name) == 56, "TfLiteTensor.name");
static_assert(offsetof(TfLiteTensor, quantization) == 80, "TfLiteTensor.quantization");
static_assert(sizeof(TfLiteTensor) == 112, "TfLiteTensor size");
static_assert(offsetof(TfLiteNode, custom_initial_data) == 48, "TfLiteNode");
static_assert(offsetof(TfLiteNode, custom_initial_data_size) == 56, "TfLiteNode");
static_assert(offsetof(TfLiteNode, delegate) == 64, "TfLiteNode.delegate");
static_assert(offsetof(TfLiteContext, tensors) == 16, "TfLiteContext.tensors");
static_assert(offsetof(TfLiteContext, ReportError) == 40, "TfLiteContext.ReportError");
static_assert(offsetof(TfLiteContext, ReplaceNodeSubsetsWithDelegateKernels) == 64,
              "TfLiteContext.ReplaceNodeSubsetsWithDelegateKernels");
static_assert(offsetof(TfLiteContext, recommended_num_threads) == 72,
              "TfLiteContext.recommended_num_threads");
static_assert(offsetof(TfLiteContext, GetTensor) == 160, "TfLiteContext.GetTensor");
static_assert(offsetof(TfLiteRegistration, builtin_code) == 40, "TfLiteRegistration");
static_assert(offsetof(TfLiteRegistration, custom_name) == 48, "TfLiteRegistration");
#if LOWBIT_TFLITE_REGISTRATION_HAS_INPLACE
static_assert(sizeof(TfLiteRegistration) == 88, "TfLiteRegistration size");
#endif
static_assert(offsetof(TfLiteDelegate, flags) == 40, "TfLiteDelegate.flags");
static_assert(sizeof(TfLiteDelegate) == 56, "TfLiteDelegate size");
#endif

// The same layout on 32-bit Arm (AAPCS, ILP32). TfLiteRegistration is passed
// by value there, so its size and alignment must be the runtime's exactly.
#if defined(__arm__) && !defined(__aarch64__)
static_assert(offsetof(TfLiteTensor, dims) == 8, "TfLiteTensor.dims (arm)");
static_assert(offsetof(TfLiteTensor, bytes) == 24, "TfLiteTensor.bytes (arm)");
static_assert(offsetof(TfLiteTensor, quantization) == 48, "TfLiteTensor.quantization (arm)");
static_assert(offsetof(TfLiteNode, custom_initial_data) == 24, "TfLiteNode (arm)");
static_assert(offsetof(TfLiteContext, ReplaceNodeSubsetsWithDelegateKernels) == 32,
              "TfLiteContext.ReplaceNodeSubsetsWithDelegateKernels (arm)");
static_assert(offsetof(TfLiteContext, GetTensor) == 80, "TfLiteContext.GetTensor (arm)");
static_assert(offsetof(TfLiteRegistration, builtin_code) == 20, "TfLiteRegistration (arm)");
static_assert(offsetof(TfLiteRegistration, async_kernel) == 36, "TfLiteRegistration (arm)");
#if LOWBIT_TFLITE_REGISTRATION_HAS_INPLACE
static_assert(offsetof(TfLiteRegistration, inplace_operator) == 40, "TfLiteRegistration (arm)");
static_assert(sizeof(TfLiteRegistration) == 48 && alignof(TfLiteRegistration) == 8,
              "TfLiteRegistration size (arm)");
#else
static_assert(sizeof(TfLiteRegistration) == 40 && alignof(TfLiteRegistration) == 4,
              "TfLiteRegistration size (arm, without inplace_operator)");
#endif
static_assert(offsetof(TfLiteDelegate, flags) == 24, "TfLiteDelegate.flags (arm)");
static_assert(sizeof(TfLiteDelegate) == 40, "TfLiteDelegate size (arm)");
#endif

#endif  // LOWBIT_TFLITE_TFLITE_ABI_H_
