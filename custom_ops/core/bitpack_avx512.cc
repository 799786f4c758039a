// AVX-512 bit-packer: 16 floats per compare straight into a mask register,
// two masks per word (no movemask and shift/or as in the AVX2 packer). Built
// with -mavx512f (custom_ops/CMakeLists.txt); only called when the CPU has
// AVX-512 F (the AVX-512 conv kernels are selected).
#include "custom_ops/core/bitpack_kernels.h"

#if LOWBIT_X86_SIMD
#if !defined(__AVX512F__)
#error "bitpack_avx512.cc must be compiled with -mavx512f"
#endif

#include <immintrin.h>

namespace lowbit {

void BitpackWordsAvx512(const float* input, std::int64_t words, PackedWord* output) {
  const __m512i offset = _mm512_set1_epi32(static_cast<int>(kNegativeBitOffset));
  const __m512i limit = _mm512_set1_epi32(kNegativeBitLimit + 1);
  for (std::int64_t w = 0; w < words; ++w) {
    const float* in = input + w * kBitsPerWord;
    // Lanes with u - offset < limit + 1, i.e. <= limit: negative (IsNegativeBitPattern).
    const __mmask16 lo = _mm512_cmplt_epi32_mask(
        _mm512_sub_epi32(_mm512_loadu_si512(in), offset), limit);
    const __mmask16 hi = _mm512_cmplt_epi32_mask(
        _mm512_sub_epi32(_mm512_loadu_si512(in + 16), offset), limit);
    output[w] = static_cast<PackedWord>(lo) | (static_cast<PackedWord>(hi) << 16);
  }
}

}  // namespace lowbit
#endif  // LOWBIT_X86_SIMD
