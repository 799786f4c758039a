#include "custom_ops/core/bitpack.h"

#include <cstring>

namespace lowbit {
namespace {

// 1 when x binarises to -1, i.e. x < 0 in exact IEEE arithmetic. Decided on
// the bit pattern so that the result does not depend on the thread's
// floating-point mode: TensorFlow runs some CPU kernels with denormals-are-zero,
// where a plain `x < 0` would call a negative subnormal zero. Negative non-zero
// numbers down to -inf have patterns in (0x80000000, 0xff800000]; -0.0 is
// 0x80000000 and NaNs with the sign bit lie above 0xff800000.
inline PackedWord NegativeBit(float x) {
  std::uint32_t u;
  std::memcpy(&u, &x, sizeof(u));
  return static_cast<PackedWord>(u > 0x80000000u && u <= 0xff800000u);
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
