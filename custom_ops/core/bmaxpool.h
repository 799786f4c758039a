// Binary max-pooling on bit-packed NHWC data.
//
// Values are +-1 with bit 1 meaning -1 (docs/custom_ops.md). The max of a
// window of +-1 values is +1 unless every value is -1, so the pooled bit is
// the AND of the window's bits, word by word. Padding (SAME) is ignored, as
// in TensorFlow's max-pool (every SAME window holds at least one real pixel).
// Because sign is monotone, sign(max(x)) == max(sign(x)): pooling the packed
// signs equals packing the signs of a float max-pool.
#ifndef LOWBIT_CORE_BMAXPOOL_H_
#define LOWBIT_CORE_BMAXPOOL_H_

#include <cstdint>

#include "custom_ops/core/types.h"

namespace lowbit {

struct BMaxPool2DParams {
  // Set by the caller.
  std::int64_t batch = 0, in_h = 0, in_w = 0;
  std::int64_t channels = 0;  // real channel count; the tensors hold PackedWords(channels)
  std::int64_t filter_h = 0, filter_w = 0;
  std::int64_t stride_h = 1, stride_w = 1;
  Padding padding = Padding::kValid;

  // Filled in by ComputeBMaxPool2DGeometry.
  std::int64_t out_h = 0, out_w = 0, pad_top = 0, pad_left = 0;

  std::int64_t words() const { return PackedWords(channels); }
};

// channels, filter sizes and strides in [1, 2^30].
Status CheckBMaxPool2DOptions(const BMaxPool2DParams& params);
// The options, then batch >= 0 and input sizes >= 1, a VALID window that fits;
// computes the output size with TensorFlow's geometry.
Status ComputeBMaxPool2DGeometry(BMaxPool2DParams* params);

// input [batch, in_h, in_w, words] -> output [batch, out_h, out_w, words].
// Bits past `channels` in the last word are written 0 (the input's are ignored).
void BMaxPool2D(const BMaxPool2DParams& params, const PackedWord* input, PackedWord* output,
                ParallelExecutor& executor);

}  // namespace lowbit

#endif  // LOWBIT_CORE_BMAXPOOL_H_
