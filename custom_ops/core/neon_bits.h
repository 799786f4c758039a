// Internal: NEON helpers shared by the kernels that gather comparison masks
// into packed bits (core/bitpack_neon.cc, core/bdepthwise_neon.cc). NEON has
// no movemask: masks (all-ones / zero lanes) are narrowed to bytes by
// unzipping their low halves, ANDed with each byte's bit value and summed
// pairwise. Internal linkage (each including translation unit its own copy).
#ifndef LOWBIT_CORE_NEON_BITS_H_
#define LOWBIT_CORE_NEON_BITS_H_

#include <arm_neon.h>

namespace lowbit {
namespace {  // NOLINT: deliberate internal linkage in a header, see above.

// The even 16-bit halves of a and b (the low half of each 32-bit lane): the
// narrowing of two mask vectors in one operation.
inline uint16x8_t EvenHalves(uint32x4_t a, uint32x4_t b) {
#if defined(__aarch64__)
  return vuzp1q_u16(vreinterpretq_u16_u32(a), vreinterpretq_u16_u32(b));
#else
  return vuzpq_u16(vreinterpretq_u16_u32(a), vreinterpretq_u16_u32(b)).val[0];
#endif
}

// The even bytes of a and b.
inline uint8x16_t EvenBytes(uint16x8_t a, uint16x8_t b) {
#if defined(__aarch64__)
  return vuzp1q_u8(vreinterpretq_u8_u16(a), vreinterpretq_u8_u16(b));
#else
  return vuzpq_u8(vreinterpretq_u8_u16(a), vreinterpretq_u8_u16(b)).val[0];
#endif
}

// Pairwise byte sums of a and b (a's 8 sums, then b's), and of a alone.
inline uint8x16_t PairSums(uint8x16_t a, uint8x16_t b) {
#if defined(__aarch64__)
  return vpaddq_u8(a, b);
#else
  return vcombine_u8(vpadd_u8(vget_low_u8(a), vget_high_u8(a)),
                     vpadd_u8(vget_low_u8(b), vget_high_u8(b)));
#endif
}
inline uint8x8_t PairSums(uint8x16_t a) { return vpadd_u8(vget_low_u8(a), vget_high_u8(a)); }

}  // namespace
}  // namespace lowbit

#endif  // LOWBIT_CORE_NEON_BITS_H_
