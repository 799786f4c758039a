// NEON bit-packer (aarch64, armv7 with NEON), 2 or 4 words (64 or 128 floats)
// a step (kStepWords).
//
// The sign test (bitpack_kernels.h: negative normals and -inf give bit 1;
// zeros, subnormals and NaN give 0) is one float compare on aarch64,
//     x <= -FLT_MIN,
// which is that test in every floating-point mode: -inf and negative normals
// are <= -FLT_MIN (the largest negative normal); NaN compares false; a
// subnormal is either flushed to +-0 (with FPCR.FZ) or compared as it is,
// and both are > -FLT_MIN. (armv7 uses the integer form, see Negative4.)
//
// NEON has no movemask. The compare masks (all-ones 32-bit lanes) of 16
// floats are narrowed to 16 bytes (two unzips of the low halves: 0x00 or
// 0xff per float), ANDed with each byte's bit value {1, 2, ..., 128} and
// summed pairwise: 16 bytes -> 8 -> 4 -> the word's 4 bytes. Per 64 floats:
// 16 compares, 12 unzips, 4 ANDs, 3 pairwise adds (+1 to split the last),
// 8 + 1 loads and stores (aarch64: ~0.77 instructions per float; the
// lane-sum version it replaced took 2.6).
#include "custom_ops/core/bitpack_kernels.h"

#if LOWBIT_NEON_SIMD

#include <arm_neon.h>

#include "custom_ops/core/neon_bits.h"

namespace lowbit {
namespace {

// The sign test of 4 floats as all-ones / zero lanes.
inline uint32x4_t Negative4(const float* p) {
#if defined(__aarch64__)
  return vcleq_f32(vld1q_f32(p), vdupq_n_f32(-1.17549435e-38f));  // x <= -FLT_MIN
#else
  // GCC for armv7 turns NEON float compares into scalar VFP ones unless
  // -funsafe-math-optimizations (NEON is not IEEE there): the integer form
  // of the same test (bitpack_kernels.h), 2 operations.
  const int32x4_t u = vreinterpretq_s32_f32(vld1q_f32(p));
  return vcleq_s32(vsubq_s32(u, vdupq_n_s32(static_cast<std::int32_t>(kNegativeBitOffset))),
                   vdupq_n_s32(kNegativeBitLimit));
#endif
}

// 16 floats -> each one's bit value (1 << (i % 8)) or 0, as 16 bytes.
inline uint8x16_t WeightedBits16(const float* p, uint8x16_t weights) {
  const uint32x4_t m0 = Negative4(p);
  const uint32x4_t m1 = Negative4(p + 4);
  const uint32x4_t m2 = Negative4(p + 8);
  const uint32x4_t m3 = Negative4(p + 12);
  return vandq_u8(EvenBytes(EvenHalves(m0, m1), EvenHalves(m2, m3)), weights);
}


// Words per step: 4 on armv7; 2 on aarch64, where GCC loads a 4-word step's
// 32 vectors first and spills a dozen of them (2 words: 49 instructions per
// 64 floats, 4 words: 103 per 128).
#if defined(__aarch64__)
constexpr std::int64_t kStepWords = 2;
#else
constexpr std::int64_t kStepWords = 4;
#endif

}  // namespace

void BitpackWordsNeon(const float* input, std::int64_t words, PackedWord* output) {
  const std::uint8_t weight_values[16] = {1, 2, 4, 8, 16, 32, 64, 128,
                                          1, 2, 4, 8, 16, 32, 64, 128};
  const uint8x16_t weights = vld1q_u8(weight_values);
  std::int64_t w = 0;
  for (; w + kStepWords <= words; w += kStepWords, input += 32 * kStepWords) {
    // Word k's two halves: bytes 0-15 and 16-31 of its 32 floats.
    const uint8x16_t w0 = PairSums(WeightedBits16(input, weights),
                                   WeightedBits16(input + 16, weights));
    const uint8x16_t w1 = PairSums(WeightedBits16(input + 32, weights),
                                   WeightedBits16(input + 48, weights));
    // 16 bytes per word -> 8 -> 4: the words' bytes in order.
    if constexpr (kStepWords == 2) {
      vst1_u32(output + w, vreinterpret_u32_u8(PairSums(PairSums(w0, w1))));
    } else {
      const uint8x16_t w2 = PairSums(WeightedBits16(input + 64, weights),
                                     WeightedBits16(input + 80, weights));
      const uint8x16_t w3 = PairSums(WeightedBits16(input + 96, weights),
                                     WeightedBits16(input + 112, weights));
      vst1q_u32(output + w,
                vreinterpretq_u32_u8(PairSums(PairSums(w0, w1), PairSums(w2, w3))));
    }
  }
  for (; w < words; ++w, input += 32) {
    const uint8x16_t w0 = PairSums(WeightedBits16(input, weights),
                                   WeightedBits16(input + 16, weights));
    const uint8x16_t bytes = PairSums(PairSums(w0, w0), PairSums(w0, w0));
    vst1q_lane_u32(output + w, vreinterpretq_u32_u8(bytes), 0);
  }
}

}  // namespace lowbit
#endif  // LOWBIT_NEON_SIMD
