#include "custom_ops/core/bitpack.h"

namespace lowbit {
namespace {

void PackRow(const float* in, std::int64_t channels, PackedWord* out) {
  const std::int64_t full_words = channels / kBitsPerWord;
  for (std::int64_t w = 0; w < full_words; ++w) {
    PackedWord word = 0;
    const float* chunk = in + w * kBitsPerWord;
    for (int b = 0; b < kBitsPerWord; ++b) {
      word |= static_cast<PackedWord>(chunk[b] < 0.0f) << b;
    }
    out[w] = word;
  }
  const std::int64_t tail = channels - full_words * kBitsPerWord;
  if (tail > 0) {
    PackedWord word = 0;
    const float* chunk = in + full_words * kBitsPerWord;
    for (std::int64_t b = 0; b < tail; ++b) {
      word |= static_cast<PackedWord>(chunk[b] < 0.0f) << b;
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
