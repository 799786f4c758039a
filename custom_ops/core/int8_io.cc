#include "custom_ops/core/int8_io.h"

#include <cmath>
#include <string>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#if defined(__aarch64__)
#include <arm_neon.h>
#endif

#include "custom_ops/core/bconv2d_kernels.h"

namespace lowbit {
namespace {

// Elements per parallel work unit of the elementwise loops: big enough that
// splitting costs nothing next to the work.
constexpr std::int64_t kChunk = 4096;

// Runs fn(begin, end) over [0, count) in chunks of kChunk elements.
template <typename Fn>
void ForChunks(std::int64_t count, ParallelExecutor& executor, Fn fn) {
  const std::int64_t chunks = (count + kChunk - 1) / kChunk;
  executor.ParallelFor(chunks, kChunk, [&](std::int64_t first, std::int64_t last) {
    const std::int64_t end = last * kChunk < count ? last * kChunk : count;
    fn(first * kChunk, end);
  });
}

}  // namespace

Status CheckInt8Quantization(const char* tensor, float scale, std::int64_t zero_point) {
  if (!std::isfinite(scale) || !(scale > 0.0f)) {
    return Status::Error(std::string(tensor) + " scale must be finite and > 0, got " +
                         std::to_string(scale));
  }
  if (zero_point < -128 || zero_point > 127) {
    return Status::Error(std::string(tensor) + " zero point must be in [-128, 127], got " +
                         std::to_string(zero_point));
  }
  return Status::Ok();
}

#if defined(__SSE2__)
namespace {

// QuantizeInt8Scaled (int8_io.h) of 4 values v = y * inv_scale, as int32
// before the saturation: the same steps.
inline __m128i QuantizeInt8x4(__m128 y, __m128 inv_scale, __m128i zero_point) {
  const __m128 v = _mm_mul_ps(y, inv_scale);
  // NaN -> 0 (the ordered compare is false for NaN), then the clamp.
  __m128 c = _mm_and_ps(_mm_cmpord_ps(v, v), v);
  c = _mm_min_ps(_mm_max_ps(c, _mm_set1_ps(-256.0f)), _mm_set1_ps(256.0f));
  // c + copysign(kHalfBelow, c), truncated.
  const __m128 sign = _mm_and_ps(c, _mm_set1_ps(-0.0f));
  const __m128 half = _mm_or_ps(sign, _mm_set1_ps(kHalfBelow));
  return _mm_add_epi32(_mm_cvttps_epi32(_mm_add_ps(c, half)), zero_point);
}

}  // namespace
#endif

void QuantizeInt8Values(const float* y, std::int64_t count, const Int8Quantization& q,
                        std::int8_t* out, ParallelExecutor& executor) {
  ForChunks(count, executor, [&](std::int64_t begin, std::int64_t end) {
    // Locals, not captures: the int8 stores may alias any captured object,
    // which would keep the loop below from vectorising.
    const float* const in = y;
    std::int8_t* const codes = out;
    const float inv_scale = q.inverse_scale();
    const std::int32_t zero_point = q.zero_point, lowest = q.lowest();
    std::int64_t i = begin;
#if defined(__SSE2__)
    // 16 values a step; the two saturating packs (int32 -> int16 -> int8)
    // are the clamp to [-128, 127], the max on int16 that of a ReLU.
    const __m128 inv = _mm_set1_ps(inv_scale);
    const __m128i zp = _mm_set1_epi32(zero_point);
    const __m128i low = _mm_set1_epi16(static_cast<short>(lowest));
    for (; i + 16 <= end; i += 16) {
      const __m128i a = QuantizeInt8x4(_mm_loadu_ps(in + i), inv, zp);
      const __m128i b = QuantizeInt8x4(_mm_loadu_ps(in + i + 4), inv, zp);
      const __m128i c = QuantizeInt8x4(_mm_loadu_ps(in + i + 8), inv, zp);
      const __m128i d = QuantizeInt8x4(_mm_loadu_ps(in + i + 12), inv, zp);
      const __m128i ab = _mm_max_epi16(_mm_packs_epi32(a, b), low);
      const __m128i cd = _mm_max_epi16(_mm_packs_epi32(c, d), low);
      const __m128i bytes = _mm_packs_epi16(ab, cd);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(codes + i), bytes);
    }
#elif defined(__aarch64__)
    // 16 values a step. FCVTAS (vcvtaq_s32_f32) rounds to nearest with
    // halves away from zero, converts NaN to 0 and saturates: exactly
    // QuantizeInt8Scaled's steps 1 and 2 where they matter (a value past
    // +-256 saturates to 127 / -128 either way, as |zero_point| <= 128). The
    // zero point is added saturating, the narrowings (int32 -> int16 -> int8)
    // saturate, and the max with `lowest` is the ReLU's clamp: 1.3
    // instructions a value instead of the generic loop's 8 (aarch64 GCC).
    const float32x4_t inv = vdupq_n_f32(inv_scale);
    const int32x4_t zp = vdupq_n_s32(zero_point);
    const int8x16_t low = vdupq_n_s8(static_cast<std::int8_t>(lowest));
    for (; i + 16 <= end; i += 16) {
      int32x4_t t[4];
      for (int k = 0; k < 4; ++k) {
        t[k] = vqaddq_s32(vcvtaq_s32_f32(vmulq_f32(vld1q_f32(in + i + 4 * k), inv)), zp);
      }
      const int16x8_t ab = vcombine_s16(vqmovn_s32(t[0]), vqmovn_s32(t[1]));
      const int16x8_t cd = vcombine_s16(vqmovn_s32(t[2]), vqmovn_s32(t[3]));
      vst1q_s8(codes + i, vmaxq_s8(vcombine_s8(vqmovn_s16(ab), vqmovn_s16(cd)), low));
    }
#endif
    for (; i < end; ++i) codes[i] = QuantizeInt8Scaled(in[i] * inv_scale, zero_point, lowest);
  });
}

void DequantizeInt8Values(const std::int8_t* q, std::int64_t count, const Int8Quantization& quant,
                          float* out, ParallelExecutor& executor) {
  ForChunks(count, executor, [&](std::int64_t begin, std::int64_t end) {
    // A plain loop: GCC vectorises it (NEON: 24 instructions per 16 codes;
    // intrinsics here measured worse, the output pointer reloaded after each
    // store, which may alias it).
    for (std::int64_t i = begin; i < end; ++i) out[i] = DequantizeInt8(q[i], quant);
  });
}

namespace {

// The bits of 32 codes (a whole word): bit b = codes[b] < zero_point.
inline PackedWord PackInt8Word(const std::int8_t* codes, std::int8_t zero_point) {
#if defined(__SSE2__)
  // Part of the x86-64 baseline: a signed byte compare and the byte sign
  // mask give 16 bits at a time.
  const __m128i zp = _mm_set1_epi8(zero_point);
  const __m128i lo = _mm_loadu_si128(reinterpret_cast<const __m128i*>(codes));
  const __m128i hi = _mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + 16));
  const auto lo_bits = static_cast<PackedWord>(_mm_movemask_epi8(_mm_cmplt_epi8(lo, zp)));
  const auto hi_bits = static_cast<PackedWord>(_mm_movemask_epi8(_mm_cmplt_epi8(hi, zp)));
  return lo_bits | (hi_bits << 16);
#elif defined(__aarch64__)
  // NEON has no byte sign mask: each compare lane (0xff or 0) keeps its bit
  // weight 1 << (b % 8), and three pairwise byte adds sum every run of 8
  // lanes into one byte (the weights are distinct powers of two: no carries).
  // After the adds byte k holds the bits of codes 8k..8k+7, so the low 32
  // bits read little-endian are the word: 11 instructions for 32 codes
  // instead of the loop's ~80 (the Pi's int8 binary-conv inputs).
  static const std::uint8_t kWeights[16] = {1, 2, 4, 8, 16, 32, 64, 128,
                                            1, 2, 4, 8, 16, 32, 64, 128};
  const uint8x16_t weights = vld1q_u8(kWeights);
  const int8x16_t zp = vdupq_n_s8(zero_point);
  const uint8x16_t lo = vandq_u8(vcltq_s8(vld1q_s8(codes), zp), weights);
  const uint8x16_t hi = vandq_u8(vcltq_s8(vld1q_s8(codes + 16), zp), weights);
  uint8x16_t sums = vpaddq_u8(lo, hi);  // pairs: lo's 8, then hi's 8
  sums = vpaddq_u8(sums, sums);         // runs of 4: lo's 4, hi's 4 (low half)
  sums = vpaddq_u8(sums, sums);         // runs of 8: lo's 2, hi's 2 (low 4 bytes)
  return static_cast<PackedWord>(vgetq_lane_u32(vreinterpretq_u32_u8(sums), 0));
#else
  PackedWord word = 0;
  for (int b = 0; b < kBitsPerWord; ++b) {
    word |= static_cast<PackedWord>(codes[b] < zero_point) << b;
  }
  return word;
#endif
}

}  // namespace

void BitpackInt8Rows(const std::int8_t* input, std::int64_t rows, std::int64_t channels,
                     std::int32_t zero_point, PackedWord* output, ParallelExecutor& executor) {
  const std::int64_t words = PackedWords(channels);
  const std::int64_t whole = channels / kBitsPerWord;  // words of 32 real channels
  // zero_point in [-128, 127] (CheckInt8Quantization), so it is an int8 itself.
  const auto zp = static_cast<std::int8_t>(zero_point);
  executor.ParallelFor(rows, channels, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t r = begin; r < end; ++r) {
      const std::int8_t* row = input + r * channels;
      PackedWord* dst = output + r * words;
      for (std::int64_t w = 0; w < whole; ++w) dst[w] = PackInt8Word(row + w * kBitsPerWord, zp);
      if (whole < words) {  // the tail: channels past the last whole word stay 0
        PackedWord word = 0;
        for (std::int64_t c = whole * kBitsPerWord; c < channels; ++c) {
          word |= static_cast<PackedWord>(row[c] < zp) << (c % kBitsPerWord);
        }
        dst[whole] = word;
      }
    }
  });
}

std::int64_t BConv2DInt8ScratchSize(BConv2DKernel kernel, const BConv2DParams& params) {
  if (Int8OutputFused(kernel)) return 0;
  return params.batch * params.out_h * params.out_w * params.out_channels;
}

void BConv2DInt8(const BConv2DParams& params, const PackedWord* input,
                 const BConv2DFilter& filter, const float* multiplier, const float* bias,
                 const BConv2DEpilogue& epilogue, const Int8Quantization& output_quantization,
                 float* scratch, std::int8_t* output, ParallelExecutor& executor) {
  if (Int8OutputFused(filter.kernel())) {
    BConv2DFusedInt8(params, input, filter, multiplier, bias, epilogue, output_quantization,
                     output, executor);
    return;
  }
  BConv2D(params, input, filter, multiplier, bias, scratch, executor, epilogue);
  const std::int64_t count = params.batch * params.out_h * params.out_w * params.out_channels;
  QuantizeInt8Values(scratch, count, output_quantization, output, executor);
}

void BGemmInt8(const BGemmParams& params, const PackedWord* input, const BConv2DFilter& filter,
               const float* multiplier, const float* bias,
               const Int8Quantization& output_quantization, float* scratch, std::int8_t* output,
               ParallelExecutor& executor) {
  BGemm(params, input, filter, multiplier, bias, scratch, executor);
  QuantizeInt8Values(scratch, params.rows * params.out_channels, output_quantization, output,
                     executor);
}

void BDepthwiseConv2DInt8(const BDepthwisePlan& plan, const PackedWord* input,
                          const float* multiplier, const float* bias,
                          const Int8Quantization& output_quantization, float* scratch,
                          std::int8_t* output, ParallelExecutor& executor) {
  BDepthwiseConv2D(plan, input, multiplier, bias, scratch, executor);
  const BDepthwiseConv2DParams& p = plan.params();
  const std::int64_t count = p.batch * p.out_h * p.out_w * p.out_channels();
  QuantizeInt8Values(scratch, count, output_quantization, output, executor);
}

}  // namespace lowbit
