#include "custom_ops/core/bitpack.h"

#include <cstring>

#include "custom_ops/core/bconv2d.h"
#include "custom_ops/core/bitpack_kernels.h"

namespace lowbit {
namespace {

// 1 when x binarises to -1: x is a negative normal number or -inf. Subnormals
// count as zero (+1) because that is what the Keras training path computes:
// TensorFlow's CPU kernels (tf.sign in ste_sign) flush subnormals to zero.
// Deciding on the bit pattern keeps the result independent of the calling
// thread's floating-point mode (TFLite threads do not flush). Negative normals
// down to -inf have patterns u in [0x80800000, 0xff800000]; -0.0 and negative
// subnormals lie below, NaNs with the sign bit above. One signed comparison
// decides it (kernels/bitpack_kernels.h derives it; the SIMD packers use it too).
inline PackedWord NegativeBit(float x) {
  std::uint32_t u;
  std::memcpy(&u, &x, sizeof(u));
  return static_cast<PackedWord>(IsNegativeBitPattern(u));
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
  BitpackRows(SelectBConv2DKernel(), input, rows, channels, output, executor);
}

void BitpackRows(BConv2DKernel kernel, const float* input, std::int64_t rows,
                 std::int64_t channels, PackedWord* output, ParallelExecutor& executor) {
  const std::int64_t words = PackedWords(channels);
  // The packer follows the convolution kernel choice (LOWBIT_KERNEL included),
  // so forcing "portable" or "reference" also tests the scalar packer.
  const BitpackWordsFn pack_words = GetKernelPath(kernel).bitpack_words;
  const std::int64_t full_words = channels / kBitsPerWord;
  executor.ParallelFor(rows, channels, [&](std::int64_t begin, std::int64_t end) {
    if (pack_words != nullptr && full_words == words) {
      // Whole words only: rows [begin, end) are one contiguous run of words
      // in the input and in the output, packed in one call (a row of 64
      // channels is 2 words, too short for the packers' 4-word steps).
      pack_words(input + begin * channels, (end - begin) * words, output + begin * words);
      return;
    }
    for (std::int64_t r = begin; r < end; ++r) {
      const float* in = input + r * channels;
      PackedWord* out = output + r * words;
      // Whole words with the path's packer where it has one, the tail with
      // the scalar packer.
      std::int64_t done = 0;
      if (pack_words != nullptr) {
        pack_words(in, full_words, out);
        done = full_words;
      }
      if (done < words) {
        PackRow(in + done * kBitsPerWord, channels - done * kBitsPerWord, out + done);
      }
    }
  });
}

void BitpackColumns(const float* input, std::int64_t rows, std::int64_t cols,
                    PackedWord* output, ParallelExecutor& executor) {
  const std::int64_t words = PackedWords(rows);
  // One unit is one word of every column: the 32 input rows it covers are
  // read whole (contiguous), and units write disjoint output words.
  executor.ParallelFor(words, kBitsPerWord * cols, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t w = begin; w < end; ++w) {
      for (std::int64_t c = 0; c < cols; ++c) output[c * words + w] = 0;
      const std::int64_t r1 = (w + 1) * kBitsPerWord < rows ? (w + 1) * kBitsPerWord : rows;
      for (std::int64_t r = w * kBitsPerWord; r < r1; ++r) {
        const float* row = input + r * cols;
        const int bit = static_cast<int>(r % kBitsPerWord);
        for (std::int64_t c = 0; c < cols; ++c) output[c * words + w] |= NegativeBit(row[c]) << bit;
      }
    }
  });
}

}  // namespace lowbit
