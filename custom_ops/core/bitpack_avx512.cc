// AVX-512 bit-packer: 16 floats per compare straight into a mask register,
// stored as the half word it fills (no movemask and shift/or as in the AVX2
// packer). Built
// with -mavx512f (custom_ops/CMakeLists.txt); only called when the CPU has
// AVX-512 F (the AVX-512 conv kernels are selected).
#include "custom_ops/core/bitpack_kernels.h"

#if LOWBIT_X86_SIMD
#if !defined(__AVX512F__)
#error "bitpack_avx512.cc must be compiled with -mavx512f"
#endif

#include <immintrin.h>

#include <cstdint>
#include <cstring>

namespace lowbit {

void BitpackWordsAvx512(const float* input, std::int64_t words, PackedWord* output) {
  // NegativeBits16Avx512 per 16 floats, the 16 mask bits stored as the half
  // word they fill (no shifts and ORs in general registers).
  auto* halves = reinterpret_cast<unsigned char*>(output);  // little-endian: low half first
  for (std::int64_t h = 0; h < 2 * words; ++h) {
    const std::uint16_t bits = static_cast<std::uint16_t>(NegativeBits16Avx512(input + 16 * h));
    std::memcpy(halves + 2 * h, &bits, sizeof(bits));
  }
}

}  // namespace lowbit
#endif  // LOWBIT_X86_SIMD
