// The SIMD binary convolution (core/bconv2d_simd.h) with AVX2: 8 output
// channels per ymm, popcount by a nibble lookup (vpshufb). Built with -mavx2
// (custom_ops/CMakeLists.txt); only entered after SelectBConv2DKernel saw
// AVX2 at run time.
#include "custom_ops/core/bconv2d_kernels.h"

#if LOWBIT_X86_SIMD
#if !defined(__AVX2__)
#error "bconv2d_avx2.cc must be compiled with -mavx2"
#endif

#include <immintrin.h>

#include "custom_ops/core/bconv2d_simd.h"
#include "custom_ops/core/bgemv_simd.h"

namespace lowbit {
namespace {

// Tile: 4 pixels x 2 ymm (16 channels): 8 byte accumulators, 2 filter vectors,
// the table, the nibble mask and temporaries use the 16 ymm registers; the
// 32-bit accumulators are touched once every 31 words (bconv2d_4x16_avx2).
struct Avx2Lut {
  using IVec = __m256i;
  using FVec = __m256;
  static constexpr int kLanes = 8;
  static constexpr int kBlockVectors = 2;
  static constexpr int kBlockWidth = kAvx2BlockWidth;
  static constexpr int kTilePixels = kAvx2TilePixels;
  static constexpr bool kBytePopcount = true;

  static IVec Zero() { return _mm256_setzero_si256(); }
  static IVec Load(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }
  static void Store(std::int32_t* p, IVec v) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v);
  }
  static IVec Broadcast(const PackedWord* p) {
    return _mm256_set1_epi32(static_cast<int>(*p));
  }
  static IVec Set32(std::int32_t v) { return _mm256_set1_epi32(v); }
  static IVec Xor(IVec a, IVec b) { return _mm256_xor_si256(a, b); }
  static IVec Add8(IVec a, IVec b) { return _mm256_add_epi8(a, b); }
  static IVec Add32(IVec a, IVec b) { return _mm256_add_epi32(a, b); }
  static IVec Sub32(IVec a, IVec b) { return _mm256_sub_epi32(a, b); }
  // Per-byte popcount by nibble lookup (see bconv2d_avx512bw.cc).
  static IVec PopcountBytes(IVec a) {
    const IVec table = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,  //
                                        0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const IVec nibble = _mm256_set1_epi8(0x0f);
    const IVec lo = _mm256_and_si256(a, nibble);
    const IVec hi = _mm256_and_si256(_mm256_srli_epi16(a, 4), nibble);
    return _mm256_add_epi8(_mm256_shuffle_epi8(table, lo), _mm256_shuffle_epi8(table, hi));
  }
  static IVec SumBytesPerLane(IVec a) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(a, _mm256_set1_epi8(1)),
                             _mm256_set1_epi16(1));
  }

  // Bit i set iff lane i of a < lane i of b (signed; bit-packed output).
  static std::uint32_t LessMask(IVec a, IVec b) {
    return static_cast<std::uint32_t>(_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(b, a))));
  }

  // Lane mask of the first n lanes (sign bit set), for vmaskmov.
  static IVec Mask(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static FVec ZeroF() { return _mm256_setzero_ps(); }
  static FVec SetF(float v) { return _mm256_set1_ps(v); }
  static FVec LoadF(const float* p, int n) {
    return n >= kLanes ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, Mask(n));
  }
  static void StoreF(float* p, FVec v, int n) {
    if (n >= kLanes) {
      _mm256_storeu_ps(p, v);
    } else {
      _mm256_maskstore_ps(p, Mask(n), v);
    }
  }
  static FVec ToFloat(IVec a) { return _mm256_cvtepi32_ps(a); }
  static FVec MulF(FVec a, FVec b) { return _mm256_mul_ps(a, b); }
  static FVec AddF(FVec a, FVec b) { return _mm256_add_ps(a, b); }
  static FVec MaxF(FVec a, FVec b) { return _mm256_max_ps(a, b); }

  // int8 I/O (QuantizeLanes in core/bconv2d_simd.h).
  static FVec MinF(FVec a, FVec b) { return _mm256_min_ps(a, b); }
  static IVec Max32(IVec a, IVec b) { return _mm256_max_epi32(a, b); }
  static IVec TruncToInt(FVec a) { return _mm256_cvttps_epi32(a); }
  // 0 in the NaN lanes (the ordered compare is false only there).
  static FVec ZeroNaN(FVec a) { return _mm256_and_ps(_mm256_cmp_ps(a, a, _CMP_ORD_Q), a); }
  // |magnitude| (its sign bit clear) with the sign of `sign`.
  static FVec CopySignF(FVec magnitude, FVec sign) {
    return _mm256_or_ps(_mm256_and_ps(sign, _mm256_set1_ps(-0.0f)), magnitude);
  }
  // n int8 codes sign-extended to int32 lanes (lanes past n: 0); a tail is
  // copied first (reading past the tensor's end could fault).
  static IVec LoadInt8(const std::int8_t* p, int n) {
    if (n >= kLanes) return _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
    alignas(16) std::int8_t part[16] = {};
    for (int i = 0; i < n; ++i) part[i] = p[i];
    return _mm256_cvtepi8_epi32(_mm_load_si128(reinterpret_cast<const __m128i*>(part)));
  }
  // The first n int32 lanes saturated to int8 (two saturating packs) and
  // stored; a tail through a copy.
  static void StoreInt8(std::int8_t* p, IVec v, int n) {
    const __m128i words =
        _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    const __m128i bytes = _mm_packs_epi16(words, words);
    if (n >= kLanes) {
      _mm_storel_epi64(reinterpret_cast<__m128i*>(p), bytes);
      return;
    }
    alignas(16) std::int8_t part[16];
    _mm_store_si128(reinterpret_cast<__m128i*>(part), bytes);
    for (int i = 0; i < n; ++i) p[i] = part[i];
  }
};

}  // namespace

void BConv2DAvx2(const SimdConvArgs& args, ParallelExecutor& executor) {
  BConv2DSimd<Avx2Lut>(args, executor);
}

// GEMV budget: 4 vectors of byte and 4 of 32-bit accumulators, the 4 filter
// vectors, the table and the nibble mask leave a few of the 16 ymm for
// temporaries (1 row: 2 blocks, 1 word per iteration of the word loop: at 4
// the temporaries spilled).
void BGemvAvx2(const SimdGemvArgs& args, ParallelExecutor& executor) {
  BGemvSimd<Avx2Lut, 4>(args, executor);
}

}  // namespace lowbit
#endif  // LOWBIT_X86_SIMD
