// Internal: the sign test shared by the bit-packers, and the per-ISA packers.
#ifndef LOWBIT_CORE_BITPACK_KERNELS_H_
#define LOWBIT_CORE_BITPACK_KERNELS_H_

#include <cstdint>

#include "custom_ops/core/bconv2d_kernels.h"
#include "custom_ops/core/types.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace lowbit {

// True when the float with bit pattern u binarises to -1, i.e. u lies in
// [0x80800000, 0xff800000] (negative normals and -inf; see bitpack.cc).
// As one signed comparison: with x = u - 0x00800000 (mod 2^32), that range
// maps to [0x80000000, 0xff000000] = [INT32_MIN, -2^24] and every other
// pattern to a larger signed value, so the test is  x <= -2^24  (signed).
// SIMD packers evaluate the same expression with a vector compare.
constexpr std::int32_t kNegativeBitLimit = -(1 << 24);
constexpr std::uint32_t kNegativeBitOffset = 0x00800000u;

inline bool IsNegativeBitPattern(std::uint32_t u) {
  return static_cast<std::int32_t>(u - kNegativeBitOffset) <= kNegativeBitLimit;
}

#if LOWBIT_X86_SIMD
// Packs `words` * 32 contiguous floats into `words` words (x86 AVX2; only
// called after a run-time check).
void BitpackWordsAvx2(const float* input, std::int64_t words, PackedWord* output);
// The same with AVX-512 F (compares into mask registers).
void BitpackWordsAvx512(const float* input, std::int64_t words, PackedWord* output);
#endif
#if defined(__AVX512F__)
// The sign bits of the 16 floats at `input` (bit i for input[i]), for the
// files built with AVX-512 F. IsNegativeBitPattern as one float compare:
// x <= -FLT_MIN (ordered, quiet) holds exactly for the negative normals and
// -inf; -0.0, the negative subnormals (> -FLT_MIN, or read as -0.0 under
// DAZ) and NaNs (unordered) fail it, as do all non-negative values. Neither
// MXCSR mode changes it (-FLT_MIN is normal; FTZ acts on results only).
// One vcmpps with a memory operand (port 5 on Intel cores: one per cycle, the
// speed limit of every AVX-512 packer).
inline __mmask16 NegativeBits16Avx512(const float* input) {
  return _mm512_cmp_ps_mask(_mm512_loadu_ps(input), _mm512_set1_ps(-1.17549435e-38f),
                            _CMP_LE_OQ);
}
#endif
#if LOWBIT_NEON_SIMD
// The same with NEON (aarch64, armv7).
void BitpackWordsNeon(const float* input, std::int64_t words, PackedWord* output);
#endif

}  // namespace lowbit

#endif  // LOWBIT_CORE_BITPACK_KERNELS_H_
