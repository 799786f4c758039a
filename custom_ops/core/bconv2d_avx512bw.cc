// The SIMD binary convolution (core/bconv2d_simd.h) with AVX-512 F + BW for
// CPUs without VPOPCNTDQ (Skylake-X, Cascade Lake): 16 output channels per
// zmm, popcount by a nibble lookup (vpshufb). Built with -mavx512f -mavx512bw;
// only entered after SelectBConv2DKernel saw both at run time.
#include "custom_ops/core/bconv2d_kernels.h"

#if LOWBIT_X86_SIMD
#if !defined(__AVX512F__) || !defined(__AVX512BW__)
#error "bconv2d_avx512bw.cc must be compiled with -mavx512f -mavx512bw"
#endif

#include <immintrin.h>

// GCC 12's AVX-512 intrinsics start some results from a self-initialised
// "undefined" vector (_mm512_undefined_*), which -Wmaybe-uninitialized (or,
// inlined into a function GCC keeps out of line, -Wuninitialized) reports at
// every inlined use: a false positive (GCC bug 105593).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

#include "custom_ops/core/bconv2d_avx512_common.h"
#include "custom_ops/core/bconv2d_simd.h"
#include "custom_ops/core/bgemv_simd.h"

namespace lowbit {
namespace {

// The shared tile and vector operations, with byte popcounts summed in 8-bit
// lanes: the 32-bit accumulators are touched once every 31 words.
struct Avx512Lut : Avx512Common {
  static constexpr bool kBytePopcount = true;
  // The 8-bit accumulators double the tile's registers: keep 8 pixels.
  static constexpr int kTilePixels = kAvx512BwTilePixels;
  static IVec Add8(IVec a, IVec b) { return _mm512_add_epi8(a, b); }
  // Per-byte popcount: the bit counts of the low and high nibble of every
  // byte, looked up in a 16-entry table (vpshufb indexes within 128-bit lanes,
  // hence the table repeated 4 times), added.
  static IVec PopcountBytes(IVec a) {
    const IVec table = _mm512_broadcast_i32x4(
        _mm_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4));
    const IVec nibble = _mm512_set1_epi8(0x0f);
    const IVec lo = _mm512_and_si512(a, nibble);
    const IVec hi = _mm512_and_si512(_mm512_srli_epi16(a, 4), nibble);
    return _mm512_add_epi8(_mm512_shuffle_epi8(table, lo), _mm512_shuffle_epi8(table, hi));
  }
  // Sum of the four byte counts of every 32-bit lane: pairs of bytes to 16
  // bits (vpmaddubsw with ones), pairs of those to 32 bits (vpmaddwd).
  static IVec SumBytesPerLane(IVec a) {
    return _mm512_madd_epi16(_mm512_maddubs_epi16(a, _mm512_set1_epi8(1)),
                             _mm512_set1_epi16(1));
  }
};

}  // namespace

void BConv2DAvx512Bw(const SimdConvArgs& args, ParallelExecutor& executor) {
  BConv2DSimd<Avx512Lut>(args, executor);
}

// GEMV budget: 8 vectors of byte and 4 to 8 of 32-bit accumulators (1 row:
// 2 blocks, 2 words per iteration of the word loop), filter vectors, the
// table and the nibble mask in 32 zmm.
void BGemvAvx512Bw(const SimdGemvArgs& args, ParallelExecutor& executor) {
  BGemvSimd<Avx512Lut, 8>(args, executor);
}

}  // namespace lowbit
#endif  // LOWBIT_X86_SIMD
