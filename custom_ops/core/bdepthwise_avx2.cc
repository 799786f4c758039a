// The binary depthwise convolution (core/bdepthwise_rows.h) with the counts
// read out and the packed signs made by AVX2, and the float output transform
// vectorised 8 channels wide by the compiler. Built with -mavx2 (custom_ops/CMakeLists.txt); only entered after
// SelectBConv2DKernel saw AVX2 at run time.
#include "custom_ops/core/bdepthwise_kernels.h"

#if LOWBIT_X86_SIMD
#if !defined(__AVX2__)
#error "bdepthwise_avx2.cc must be compiled with -mavx2"
#endif

#include <immintrin.h>

#include "custom_ops/core/bdepthwise_rows.h"

namespace lowbit {
namespace {

// Per 32 lanes (one 32-bit half of every plane): broadcast the plane's word,
// copy byte k of it to bytes [8k, 8k + 8) (vpshufb works within 128-bit
// lanes, each holding the whole word), keep bit j of byte j % 8 and compare:
// 0xff where lane j's bit is set. Adding those masks ANDed with 2^p gives the
// 32 counts (<= 63) as bytes, then widened to int32 and written or added to
// counts.
struct Avx2Counter {
  template <int P, bool kAccumulate>
  static void Add(const Lanes* planes, std::int32_t* counts) {
    const __m256i spread = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,  //
                                            2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i bit_of_byte = _mm256_set1_epi64x(0x8040201008040201ll);
    for (int half = 0; half < 2; ++half) {
      __m256i sum = _mm256_setzero_si256();
      for (int p = 0; p < P; ++p) {
        const __m256i word = _mm256_set1_epi32(static_cast<int>(planes[p] >> (32 * half)));
        const __m256i bits = _mm256_and_si256(_mm256_shuffle_epi8(word, spread), bit_of_byte);
        const __m256i set = _mm256_cmpeq_epi8(bits, bit_of_byte);
        sum = _mm256_add_epi8(sum, _mm256_and_si256(set, _mm256_set1_epi8(1 << p)));
      }
      const __m128i low = _mm256_castsi256_si128(sum);
      const __m128i high = _mm256_extracti128_si256(sum, 1);
      const __m128i quarters[4] = {low, _mm_srli_si128(low, 8), high, _mm_srli_si128(high, 8)};
      for (int q = 0; q < 4; ++q) {
        auto* dst = reinterpret_cast<__m256i*>(counts + 32 * half + 8 * q);
        const __m256i wide = _mm256_cvtepu8_epi32(quarters[q]);
        _mm256_storeu_si256(dst, kAccumulate ? _mm256_add_epi32(_mm256_loadu_si256(dst), wide)
                                             : wide);
      }
    }
  }
};

// The packed signs 8 channels at a time: D = taps - 2 * count, compared with
// the (zero-padded) thresholds, the sign bits of the comparison masks
// gathered by vmovmskps; bits past the last channel cleared.
struct Avx2BitpackedSink : BitpackedSink {
  void operator()(std::int64_t pixel, std::int64_t chunk, std::int32_t taps,
                  const std::int32_t* counts) const {
    const __m256i all_taps = _mm256_set1_epi32(taps);
    Lanes bits = 0;
    for (int g = 0; g < kLanes / 8; ++g) {
      const __m256i count = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(counts + 8 * g));
      const __m256i dot = _mm256_sub_epi32(all_taps, _mm256_slli_epi32(count, 1));
      const __m256i limit = _mm256_loadu_si256(
          reinterpret_cast<const __m256i*>(threshold + chunk * kLanes + 8 * g));
      const int below = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(limit, dot)));
      bits |= static_cast<Lanes>(static_cast<unsigned>(below)) << (8 * g);
    }
    const std::int64_t n = out_channels - chunk * kLanes;
    const Lanes valid = n >= kLanes ? ~Lanes{0} : (Lanes{1} << n) - 1;
    Store(pixel, chunk, (bits ^ flip_bits[chunk]) & valid);
  }
};

}  // namespace

void BDepthwiseRowsAvx2(const DepthwiseRowsArgs& args, ParallelExecutor& executor) {
  RunDepthwiseRows<Avx2Counter, Avx2BitpackedSink>(args, executor);
}

}  // namespace lowbit
#endif  // LOWBIT_X86_SIMD
