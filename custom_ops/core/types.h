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
#include <functional>
#include <string>

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

// Runs fn(begin, end) over disjoint sub-ranges covering [0, total), possibly in
// parallel. `cost_per_unit` is a rough number of inner-loop operations per unit
// so that an executor can decide how finely to split. Each shell supplies one:
// TF wraps its intra-op thread pool, TFLite uses core/thread_pool.h.
class ParallelExecutor {
 public:
  using RangeFn = std::function<void(std::int64_t begin, std::int64_t end)>;
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
