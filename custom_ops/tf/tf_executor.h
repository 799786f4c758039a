// Adapts TensorFlow's intra-op thread pool to the core's ParallelExecutor.
#ifndef LOWBIT_TF_TF_EXECUTOR_H_
#define LOWBIT_TF_TF_EXECUTOR_H_

#include "custom_ops/core/types.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/platform/threadpool.h"

namespace lowbit {

class TfExecutor final : public ParallelExecutor {
 public:
  explicit TfExecutor(tensorflow::OpKernelContext* ctx)
      : pool_(ctx->device()->tensorflow_cpu_worker_threads()->workers) {}

  void ParallelFor(std::int64_t total, std::int64_t cost_per_unit, const RangeFn& fn) override {
    if (total <= 0) return;
    // TF's ParallelFor shards by cost: small jobs stay on the calling thread.
    pool_->ParallelFor(total, cost_per_unit, fn);
  }

 private:
  tensorflow::thread::ThreadPool* pool_;
};

}  // namespace lowbit

#endif  // LOWBIT_TF_TF_EXECUTOR_H_
