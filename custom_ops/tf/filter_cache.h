// The binary-convolution filter of a TF op, laid out once for its kernel.
#ifndef LOWBIT_TF_FILTER_CACHE_H_
#define LOWBIT_TF_FILTER_CACHE_H_

#include <memory>
#include <mutex>

#include "custom_ops/core/bconv2d.h"

namespace lowbit {

// Keeps the filter re-laid out for `kernel` while the filter input keeps the
// same words (checked by a memcmp of the compact filter, 1 bit per weight:
// far cheaper than preparing it again, which the SIMD layouts would cost on
// every call). Compute may run concurrently, so the cache is swapped under a
// lock and each call holds its own reference.
class BConv2DFilterCache {
 public:
  std::shared_ptr<const BConv2DFilter> Get(BConv2DKernel kernel, const BConv2DParams& params,
                                           const PackedWord* compact) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (prepared_ == nullptr || !prepared_->SameSource(kernel, params, compact)) {
      auto fresh = std::make_shared<BConv2DFilter>();
      fresh->Prepare(kernel, params, compact);
      prepared_ = std::move(fresh);
    }
    return prepared_;
  }

 private:
  std::mutex mutex_;
  std::shared_ptr<const BConv2DFilter> prepared_;  // guarded by mutex_
};

}  // namespace lowbit

#endif  // LOWBIT_TF_FILTER_CACHE_H_
