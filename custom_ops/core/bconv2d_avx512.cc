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

// The shared tile and vector operations, with VPOPCNTD as the popcount.
struct Avx512Vpopcnt : Avx512Common {
  static constexpr bool kBytePopcount = false;
  static IVec Popcount32(IVec a) { return _mm512_popcnt_epi32(a); }
};

}  // namespace

void BConv2DAvx512(const SimdConvArgs& args, ParallelExecutor& executor) {
  BConv2DSimd<Avx512Vpopcnt>(args, executor);
}

// GEMV budget: 16 accumulator zmm and 16 triples per iteration of the word
// loop (1 row: 2 blocks, 4 words per iteration; 8 rows: 1 block, 1 word), the
// rest of the 32 for filter vectors, broadcasts and temporaries.
void BGemvAvx512(const SimdGemvArgs& args, ParallelExecutor& executor) {
  BGemvSimd<Avx512Vpopcnt, 16>(args, executor);
}

}  // namespace lowbit
#endif  // LOWBIT_X86_SIMD
