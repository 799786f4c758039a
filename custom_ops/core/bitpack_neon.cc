// NEON bit-packer (aarch64, armv7 with NEON): 4 floats per compare. NEON has
// no movemask, so each compare mask (all-ones lanes) is ANDed with the lane's
// bit value {1, 2, 4, 8} and the four lanes are summed into a nibble.
#include "custom_ops/core/bitpack_kernels.h"

#if LOWBIT_NEON_SIMD

#include <arm_neon.h>

namespace lowbit {

void BitpackWordsNeon(const float* input, std::int64_t words, PackedWord* output) {
  const int32x4_t offset = vdupq_n_s32(static_cast<std::int32_t>(kNegativeBitOffset));
  const int32x4_t limit = vdupq_n_s32(kNegativeBitLimit);
  const std::uint32_t lane_bits_init[4] = {1, 2, 4, 8};
  const uint32x4_t lane_bits = vld1q_u32(lane_bits_init);
  for (std::int64_t w = 0; w < words; ++w) {
    PackedWord word = 0;
    for (int q = 0; q < 8; ++q) {
      const int32x4_t u = vreinterpretq_s32_f32(vld1q_f32(input + w * kBitsPerWord + q * 4));
      // IsNegativeBitPattern: (u - offset) <= limit, signed.
      const uint32x4_t negative = vcleq_s32(vsubq_s32(u, offset), limit);
      const uint32x4_t bits = vandq_u32(negative, lane_bits);
#if defined(__aarch64__)
      const std::uint32_t nibble = vaddvq_u32(bits);
#else
      const uint32x2_t pairs = vadd_u32(vget_low_u32(bits), vget_high_u32(bits));
      const std::uint32_t nibble = vget_lane_u32(vpadd_u32(pairs, pairs), 0);
#endif
      word |= static_cast<PackedWord>(nibble) << (4 * q);
    }
    output[w] = word;
  }
}

}  // namespace lowbit
#endif  // LOWBIT_NEON_SIMD
