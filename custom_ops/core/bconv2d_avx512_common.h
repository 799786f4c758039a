// Internal: the AVX-512 F vector operations shared by the two AVX-512 kernels
// (bconv2d_avx512.cc with VPOPCNTDQ, bconv2d_avx512bw.cc with a nibble-LUT
// popcount). Each includes this header from its own translation unit, built
// with its own flags; everything here has internal linkage, so the copies
// never merge, and only AVX-512 F instructions are used.
#ifndef LOWBIT_CORE_BCONV2D_AVX512_COMMON_H_
#define LOWBIT_CORE_BCONV2D_AVX512_COMMON_H_

#include <immintrin.h>

#include <cstdint>

#include "custom_ops/core/bconv2d_kernels.h"

namespace lowbit {
namespace {  // NOLINT: deliberate internal linkage in a header, see above.

// Tile: 12 pixels x 2 zmm (32 channels) = 24 accumulators, 2 filter vectors and
// the broadcasts/temporaries fit the 32 zmm registers without spills; per input
// word 2 loads + 12 broadcasts feed 72 vector operations (bconv2d_12x32_avx512).
// 12 rather than 8 pixels halves what the per-tile work (indirection table,
// output transform setup) costs against the popcounts when the input has few
// channels: measured on 3x3 56x56x64->64, 1 thread, 0.163 -> 0.132 ms (73% ->
// 83% of the binary peak); 14x14x256 and 28x28x128 gained 3-5%, 7x7x512 kept
// its time (noise level). 14 pixels was no better and leaves no spare register.
// On Zen 4 (AMD EPYC, 2026-12): 6 pixels gave the same times as 12 on 1x1
// convs of 128-512 channels and 2% more on 3x3 56x56x64; XORing with an
// embedded broadcast (vpxord m32{1to16}, inline asm) instead of one
// vpbroadcastd per pixel and word was 1-3% slower on every conv row.
// A kernel's ISA struct derives from this and adds its popcount.
struct Avx512Common {
  using IVec = __m512i;
  using FVec = __m512;
  static constexpr int kLanes = 16;
  static constexpr int kBlockVectors = 2;
  static constexpr int kBlockWidth = kAvx512BlockWidth;
  static constexpr int kTilePixels = kAvx512TilePixels;

  static IVec Zero() { return _mm512_setzero_si512(); }
  static IVec Load(const void* p) { return _mm512_loadu_si512(p); }
  static void Store(std::int32_t* p, IVec v) { _mm512_storeu_si512(p, v); }
  static IVec Broadcast(const PackedWord* p) {
    return _mm512_set1_epi32(static_cast<int>(*p));
  }
  static IVec Set32(std::int32_t v) { return _mm512_set1_epi32(v); }
  static IVec Xor(IVec a, IVec b) { return _mm512_xor_si512(a, b); }
  static IVec Add32(IVec a, IVec b) { return _mm512_add_epi32(a, b); }
  static IVec Sub32(IVec a, IVec b) { return _mm512_sub_epi32(a, b); }

  // Bit i set iff lane i of a < lane i of b (signed; bit-packed output).
  static std::uint32_t LessMask(IVec a, IVec b) { return _mm512_cmplt_epi32_mask(a, b); }
  static __mmask16 Mask(int n) { return static_cast<__mmask16>((1u << n) - 1u); }
  static FVec ZeroF() { return _mm512_setzero_ps(); }
  static FVec SetF(float v) { return _mm512_set1_ps(v); }
  static FVec LoadF(const float* p, int n) {
    return n >= kLanes ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(Mask(n), p);
  }
  static void StoreF(float* p, FVec v, int n) {
    if (n >= kLanes) {
      _mm512_storeu_ps(p, v);
    } else {
      _mm512_mask_storeu_ps(p, Mask(n), v);
    }
  }
  static FVec ToFloat(IVec a) { return _mm512_cvtepi32_ps(a); }
  static FVec MulF(FVec a, FVec b) { return _mm512_mul_ps(a, b); }
  static FVec AddF(FVec a, FVec b) { return _mm512_add_ps(a, b); }
  static FVec MaxF(FVec a, FVec b) { return _mm512_max_ps(a, b); }

  // int8 I/O (QuantizeLanes in core/bconv2d_simd.h).
  static FVec MinF(FVec a, FVec b) { return _mm512_min_ps(a, b); }
  static IVec Max32(IVec a, IVec b) { return _mm512_max_epi32(a, b); }
  static IVec TruncToInt(FVec a) { return _mm512_cvttps_epi32(a); }
  // 0 in the NaN lanes (the ordered compare is false only there).
  static FVec ZeroNaN(FVec a) { return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(a, a, _CMP_ORD_Q), a); }
  // |magnitude| (its sign bit clear) with the sign of `sign`: one ternary
  // logic instruction, (sign AND sign_bit) OR magnitude (truth table 0xEA).
  static FVec CopySignF(FVec magnitude, FVec sign) {
    return _mm512_castsi512_ps(_mm512_ternarylogic_epi32(
        _mm512_castps_si512(sign), _mm512_set1_epi32(INT32_MIN), _mm512_castps_si512(magnitude),
        0xEA));
  }
  // n int8 codes sign-extended to int32 lanes (lanes past n: 0). A tail is
  // copied first: AVX-512 F has no masked byte load, and reading past the
  // tensor's end could fault.
  static IVec LoadInt8(const std::int8_t* p, int n) {
    if (n >= kLanes) return _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    alignas(16) std::int8_t part[kLanes] = {};
    for (int i = 0; i < n; ++i) part[i] = p[i];
    return _mm512_cvtepi8_epi32(_mm_load_si128(reinterpret_cast<const __m128i*>(part)));
  }
  // The first n int32 lanes saturated to int8 and stored (vpmovsdb; masked
  // for a tail).
  static void StoreInt8(std::int8_t* p, IVec v, int n) {
    if (n >= kLanes) {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm512_cvtsepi32_epi8(v));
    } else {
      _mm512_mask_cvtsepi32_storeu_epi8(p, Mask(n), v);
    }
  }
};

}  // namespace
}  // namespace lowbit

#endif  // LOWBIT_CORE_BCONV2D_AVX512_COMMON_H_
