// AVX2 bit-packer: 8 floats per compare, movemask to bits. Built with -mavx2
// (custom_ops/CMakeLists.txt); only called when the CPU has AVX2.
#include "custom_ops/core/bitpack_kernels.h"

#if LOWBIT_X86_SIMD
#if !defined(__AVX2__)
#error "bitpack_avx2.cc must be compiled with -mavx2"
#endif

#include <immintrin.h>

namespace lowbit {

void BitpackWordsAvx2(const float* input, std::int64_t words, PackedWord* output) {
  const __m256i offset = _mm256_set1_epi32(static_cast<int>(kNegativeBitOffset));
  const __m256i limit = _mm256_set1_epi32(kNegativeBitLimit);
  for (std::int64_t w = 0; w < words; ++w) {
    PackedWord word = 0;
    for (int q = 0; q < 4; ++q) {
      const __m256i u = _mm256_loadu_si256(
          reinterpret_cast<const __m256i*>(input + w * kBitsPerWord + q * 8));
      // Lanes with x > limit are NOT negative (IsNegativeBitPattern).
      const __m256i above = _mm256_cmpgt_epi32(_mm256_sub_epi32(u, offset), limit);
      const int not_negative = _mm256_movemask_ps(_mm256_castsi256_ps(above));
      word |= static_cast<PackedWord>(~not_negative & 0xff) << (8 * q);
    }
    output[w] = word;
  }
}

}  // namespace lowbit
#endif  // LOWBIT_X86_SIMD
