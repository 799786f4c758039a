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
};

}  // namespace
}  // namespace lowbit

#endif  // LOWBIT_CORE_BCONV2D_AVX512_COMMON_H_
