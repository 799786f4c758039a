// Adapts TensorFlow's intra-op thread pool to the core's ParallelExecutor.
#ifndef LOWBIT_TF_TF_EXECUTOR_H_
#define LOWBIT_TF_TF_EXECUTOR_H_

#include "custom_ops/core/types.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/platform/denormal.h"
#include "tensorflow/core/platform/threadpool.h"

namespace lowbit {

// TensorFlow runs kernels with subnormal floats flushed to zero (FTZ/DAZ);
// TFLite does not. The kernels' float arithmetic (the output transform, the
// thresholds of a bit-packed output, multi-bit and Fastfood sums) must give
// the TFLite shell's bits, so each Compute that does float arithmetic holds
// one of these for its whole run, and the executor holds one on every pool
// thread while it runs a chunk. (Binarisation reads bit patterns and does not
// depend on the mode.)
using IeeeSubnormals = tensorflow::port::ScopedDontFlushDenormal;

// Splits a job into one contiguous chunk per intra-op thread, the same split
// as the TFLite shell's pool (core/thread_pool.h: ParallelChunks), rather than
// through TF's cost-model sharding: the kernels' work items are uniform and a
// thread's items must be contiguous (a conv tile's indirection table is built
// once per range). Measured on the 3x3 14x14x256 conv with 2 intra-op threads,
// TF's own ParallelFor gave 1.2x over one thread, this split 1.8x.
class TfExecutor final : public ParallelExecutor {
 public:
  explicit TfExecutor(tensorflow::OpKernelContext* ctx)
      : pool_(ctx->device()->tensorflow_cpu_worker_threads()->workers) {}

  void ParallelFor(std::int64_t total, std::int64_t cost_per_unit, const RangeFn& fn) override;

 private:
  tensorflow::thread::ThreadPool* pool_;
};

}  // namespace lowbit

#endif  // LOWBIT_TF_TF_EXECUTOR_H_
