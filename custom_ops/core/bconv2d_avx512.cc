// The SIMD binary convolution (core/bconv2d_simd.h) with AVX-512 F and
// VPOPCNTDQ: 16 output channels per zmm, popcount by VPOPCNTD. Built with
// -mavx512f -mavx512vpopcntdq (custom_ops/CMakeLists.txt); only entered after
// SelectBConv2DKernel saw both features at run time.
#include "custom_ops/core/bconv2d_kernels.h"

#if LOWBIT_X86_SIMD
#if !defined(__AVX512F__) || !defined(__AVX512VPOPCNTDQ__)
#error "bconv2d_avx512.cc must be compiled with -mavx512f -mavx512vpopcntdq"
#endif

#include <immintrin.h>

// GCC 12's AVX-512 intrinsics start some results from a self-initialised
// "undefined" vector (_mm512_undefined_*), which -Wmaybe-uninitialized reports
// at every inlined use: a false positive (GCC bug 105593).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include "custom_ops/core/bconv2d_simd.h"

namespace lowbit {
namespace {

// Tile: 8 pixels x 2 zmm (32 channels) = 16 accumulators, 2 filter vectors and
// the broadcasts/temporaries fit the 32 zmm registers without spills; per input
// word 2 loads + 8 broadcasts feed 48 vector operations (bconv2d_8x32_avx512).
struct Avx512Vpopcnt {
  using IVec = __m512i;
  using FVec = __m512;
  static constexpr int kLanes = 16;
  static constexpr int kBlockVectors = 2;
  static constexpr int kBlockWidth = kAvx512BlockWidth;
  static constexpr int kTilePixels = 8;
  static constexpr bool kBytePopcount = false;

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
  static IVec Popcount32(IVec a) { return _mm512_popcnt_epi32(a); }

  static __mmask16 Mask(int n) { return static_cast<__mmask16>((1u << n) - 1u); }
  static FVec ZeroF() { return _mm512_setzero_ps(); }
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

void BConv2DAvx512(const SimdConvArgs& args, ParallelExecutor& executor) {
  BConv2DSimd<Avx512Vpopcnt>(args, executor);
}

}  // namespace lowbit
#endif  // LOWBIT_X86_SIMD
