// Shared vocabulary of the lowbit compute core.
//
// The core is plain C++17 with no dependency on TensorFlow or TFLite. Both shells
// (custom_ops/tf and custom_ops/tflite) translate their tensors into the raw
// pointers and parameter structs declared here, validate them with the core's
// own checks, and call the same kernels, so the two runtimes are bit-identical.
//
// Bit convention (see docs/custom_ops.md):
//   sign binarisation maps x >= 0 to +1 and x < 0 to -1, subnormals counting
//   as 0 (as in TensorFlow's float kernels) and NaN as +1;
//   a packed word holds 32 consecutive channel values, lowest channel in the
//   lowest bit, bit 1 meaning -1; channels are padded with zero bits (+1) up to
//   a whole word. For K values a, b in {-1,+1}^K packed as pa, pb:
//       dot(a, b) = K - 2 * popcount(pa XOR pb).
#ifndef LOWBIT_CORE_TYPES_H_
#define LOWBIT_CORE_TYPES_H_

#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>

namespace lowbit {

using PackedWord = std::uint32_t;
constexpr int kBitsPerWord = 32;

// Number of packed words that hold `channels` binary values.
constexpr std::int64_t PackedWords(std::int64_t channels) {
  return (channels + kBitsPerWord - 1) / kBitsPerWord;
}

// Mask of the bits of the last word of a packed row that carry real channels.
constexpr PackedWord TailMask(std::int64_t channels) {
  return (channels % kBitsPerWord) == 0
             ? ~PackedWord{0}
             : (PackedWord{1} << (channels % kBitsPerWord)) - 1u;
}

// Product of `count` dimensions, e.g. the leading dimensions of an N-d input
// that an op flattens into its batch (or rows). 0 when any of them is 0 (an
// empty tensor, however large the others); false when a dimension is negative
// or the product exceeds 2^62 (callers then check their own, smaller limits).
template <typename Int>
bool FlattenDims(const Int* dims, int count, std::int64_t* product) {
  constexpr std::int64_t kLimit = std::int64_t{1} << 62;
  *product = 1;
  for (int i = 0; i < count; ++i) {
    if (dims[i] < 0) return false;
    if (dims[i] == 0) {
      *product = 0;
      return true;
    }
  }
  for (int i = 0; i < count; ++i) {
    if (*product > kLimit / dims[i]) return false;
    *product *= dims[i];
  }
  return true;
}

// kExplicit: LowbitBconv2d only, the pad sizes given per side
// (BConv2DParams::explicit_pads), as TensorFlow's EXPLICIT padding.
enum class Padding { kValid, kSame, kExplicit };
enum class Activation { kNone, kRelu };

// Result of a validation step. The shells turn a failed Status into their own
// error mechanism (OP_REQUIRES in TF, context->ReportError in TFLite).
struct Status {
  bool ok = true;
  std::string message;

  static Status Ok() { return Status{}; }
  static Status Error(std::string msg) { return Status{false, std::move(msg)}; }
};

// What ParallelFor runs: a reference to a callable fn(begin, end), not a copy
// of it. ParallelFor calls it only before it returns, while the callable the
// caller passed (typically a lambda, a temporary of the calling expression)
// is alive. Unlike std::function it never allocates: std::function keeps at
// most two pointers in place, so a lambda capturing three variables by
// reference cost a malloc and a free per call (per TFLite invoke of a dense
// layer with a float input: the bit-packing's).
class RangeFnRef {
 public:
  template <class F, class = std::enable_if_t<!std::is_same_v<std::decay_t<F>, RangeFnRef>>>
  RangeFnRef(F&& fn)  // NOLINT: implicit, as std::function's
      : callable_(const_cast<void*>(static_cast<const void*>(std::addressof(fn)))),
        call_([](void* callable, std::int64_t begin, std::int64_t end) {
          (*static_cast<std::remove_reference_t<F>*>(callable))(begin, end);
        }) {}
  void operator()(std::int64_t begin, std::int64_t end) const { call_(callable_, begin, end); }

 private:
  void* callable_;
  void (*call_)(void*, std::int64_t, std::int64_t);
};

// Runs fn(begin, end) over disjoint sub-ranges covering [0, total), possibly in
// parallel. `cost_per_unit` is a rough number of inner-loop operations per unit
// so that an executor can decide how finely to split. Each shell supplies one:
// TF wraps its intra-op thread pool, TFLite uses core/thread_pool.h.
class ParallelExecutor {
 public:
  using RangeFn = RangeFnRef;
  virtual ~ParallelExecutor() = default;
  virtual void ParallelFor(std::int64_t total, std::int64_t cost_per_unit,
                           const RangeFn& fn) = 0;
};

// Executor that runs everything on the calling thread.
class InlineExecutor final : public ParallelExecutor {
 public:
  void ParallelFor(std::int64_t total, std::int64_t /*cost_per_unit*/,
                   const RangeFn& fn) override {
    if (total > 0) fn(0, total);
  }
};

}  // namespace lowbit

#endif  // LOWBIT_CORE_TYPES_H_
