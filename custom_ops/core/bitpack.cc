#include "custom_ops/core/bitpack.h"

#include <cstring>

namespace lowbit {
namespace {

// 1 when x binarises to -1: x is a negative normal number or -inf. Subnormals
// count as zero (+1) because that is what the Keras training path computes:
// TensorFlow's CPU kernels (tf.sign in ste_sign) flush subnormals to zero.
// Deciding on the bit pattern keeps the result independent of the calling
// thread's floating-point mode (TFLite threads do not flush). Negative normals
// down to -inf have patterns in [0x80800000, 0xff800000]; -0.0 and negative
// subnormals lie below, NaNs with the sign bit above.
inline PackedWord NegativeBit(float x) {
  std::uint32_t u;
  std::memcpy(&u, &x, sizeof(u));
  return static_cast<PackedWord>(u >= 0x80800000u && u <= 0xff800000u);
}

void PackRow(const float* in, std::int64_t channels, PackedWord* out) {
  const std::int64_t full_words = channels / kBitsPerWord;
  for (std::int64_t w = 0; w < full_words; ++w) {
    PackedWord word = 0;
    const float* chunk = in + w * kBitsPerWord;
    for (int b = 0; b < kBitsPerWord; ++b) {
      word |= NegativeBit(chunk[b]) << b;
    }
    out[w] = word;
  }
  const std::int64_t tail = channels - full_words * kBitsPerWord;
  if (tail > 0) {
    PackedWord word = 0;
    const float* chunk = in + full_words * kBitsPerWord;
    for (std::int64_t b = 0; b < tail; ++b) {
      word |= NegativeBit(chunk[b]) << b;
    }
    out[full_words] = word;
  }
}

}  // namespace

void BitpackRows(const float* input, std::int64_t rows, std::int64_t channels,
                 PackedWord* output, ParallelExecutor& executor) {
  const std::int64_t words = PackedWords(channels);
  executor.ParallelFor(rows, channels, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t r = begin; r < end; ++r) {
      PackRow(input + r * channels, channels, output + r * words);
    }
  });
}

}  // namespace lowbit
