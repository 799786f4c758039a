// The binary depthwise convolution (core/bdepthwise_rows.h) with the counts
// read out and the packed signs made by NEON (aarch64, armv7 with NEON). The
// float output keeps the plain C++ transform of FloatSink: GCC vectorises it
// on aarch64 and leaves it scalar (VFP, IEEE) on armv7, whose NEON float
// arithmetic flushes subnormals and whose float compares GCC turns into
// scalar VFP ones unless -funsafe-math-optimizations (see bitpack_neon.cc);
// nothing here compares floats.
#include "custom_ops/core/bdepthwise_kernels.h"

#if LOWBIT_NEON_SIMD

#include <arm_neon.h>

#include "custom_ops/core/neon_bits.h"

#include "custom_ops/core/bdepthwise_rows.h"

namespace lowbit {
namespace {

// A counter plane (core/bdepthwise_rows.h) as 8 bytes in a d register, byte
// k = lanes [8k, 8k + 8): the tap loop runs in NEON registers, so the planes
// need no moves from general-purpose registers for the read-out (and on
// armv7 a 64-bit AND / EOR is one instruction, not two).
using Plane = uint8x8_t;

// Words [0, 2) of `words`, or only word 0 without kTwo.
template <bool kTwo>
inline Plane LoadPlane(const PackedWord* words) {
  if (kTwo) return vreinterpret_u8_u32(vld1_u32(words));
  return vreinterpret_u8_u32(vld1_lane_u32(words, vdup_n_u32(0), 0));
}

// Bytes [0, 8) = byte 2q of the plane, bytes [8, 16) = byte 2q + 1: the plane
// bits of lanes [16q, 16q + 16), each in the byte of its lane (then picked by
// a bit test). `spread` holds the look-up indices {2q x 8, (2q + 1) x 8}.
inline uint8x16_t Spread(Plane plane, uint8x16_t spread) {
#if defined(__aarch64__)
  return vqtbl1q_u8(vcombine_u8(plane, plane), spread);
#else
  return vcombine_u8(vtbl1_u8(plane, vget_low_u8(spread)), vtbl1_u8(plane, vget_high_u8(spread)));
#endif
}

// ScalarTapLoop (core/bdepthwise_rows.h) on d registers.
struct NeonTapLoop {
  template <int P, bool kTwo, bool kAccumulate, typename Counter>
  static void Block(const PackedWord* const* in_taps, const PackedWord* const* filter_taps,
                    std::int64_t t0, std::int64_t t1, std::int64_t w, std::int32_t* counts) {
    Plane planes[P];
    for (int p = 0; p < P; ++p) planes[p] = vdup_n_u8(0);
    for (std::int64_t t = t0; t < t1; ++t) {
      Plane v = veor_u8(LoadPlane<kTwo>(in_taps[t] + w), LoadPlane<kTwo>(filter_taps[t] + w));
      for (int p = 0; p < P; ++p) {
        const Plane carry = vand_u8(planes[p], v);
        planes[p] = veor_u8(planes[p], v);
        v = carry;
      }
    }
    Counter::template Add<P, kAccumulate>(planes, counts);
  }
};

// Per 16 lanes: every plane's two bytes spread over the lanes' bytes (table
// look-up), VTST against {1, 2, ..., 128} (0xff where the lane's bit is set)
// and the P masks combined by Horner's rule from the top plane down, one
// shift-left-and-insert each: sum = (sum << 1) | (mask & 1). The top plane's
// mask starts as its bit (mask >> 7). The 16 counts (<= 63) are then widened
// to int32 and written or added to counts.
struct NeonCounter {
  using TapLoop = NeonTapLoop;

  template <int P, bool kAccumulate>
  static void Add(const Plane* planes, std::int32_t* counts) {
    static const std::uint8_t kBitOfByte[16] = {1, 2, 4, 8, 16, 32, 64, 128,
                                                1, 2, 4, 8, 16, 32, 64, 128};
    static const std::uint8_t kSpread[4][16] = {
        {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1},
        {2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3},
        {4, 4, 4, 4, 4, 4, 4, 4, 5, 5, 5, 5, 5, 5, 5, 5},
        {6, 6, 6, 6, 6, 6, 6, 6, 7, 7, 7, 7, 7, 7, 7, 7}};
    const uint8x16_t bit_of_byte = vld1q_u8(kBitOfByte);
    auto* out = reinterpret_cast<std::uint32_t*>(counts);
    for (int q = 0; q < 4; ++q) {
      const uint8x16_t spread = vld1q_u8(kSpread[q]);
      uint8x16_t sum = vshrq_n_u8(vtstq_u8(Spread(planes[P - 1], spread), bit_of_byte), 7);
      for (int p = P - 2; p >= 0; --p) {
        sum = vsliq_n_u8(vtstq_u8(Spread(planes[p], spread), bit_of_byte), sum, 1);
      }
      const uint16x8_t low = vmovl_u8(vget_low_u8(sum));
      const uint16x8_t high = vmovl_u8(vget_high_u8(sum));
      const uint16x4_t parts[4] = {vget_low_u16(low), vget_high_u16(low), vget_low_u16(high),
                                   vget_high_u16(high)};
      for (int i = 0; i < 4; ++i) {
        std::uint32_t* dst = out + 16 * q + 4 * i;
        vst1q_u32(dst, kAccumulate ? vaddw_u16(vld1q_u32(dst), parts[i]) : vmovl_u16(parts[i]));
      }
    }
  }
};

// The packed signs, 16 channels a step: D = taps - 2 * count compared with
// the (zero-padded) thresholds in int32 (no float compare; as a comparison
// of count with half of taps - threshold), the four masks
// narrowed to 16 bytes by two unzips and ANDed with each byte's bit value;
// the 64 bytes are then summed pairwise, 64 -> 32 -> 16 -> 8: the chunk's 8
// bytes of bits in order. Bits past the last channel are cleared.
struct NeonBitpackedSink : BitpackedSink {
  void operator()(std::int64_t pixel, std::int64_t chunk, std::int32_t taps,
                  const std::int32_t* counts) const {
    static const std::uint8_t kWeights[16] = {1, 2, 4, 8, 16, 32, 64, 128,
                                              1, 2, 4, 8, 16, 32, 64, 128};
    const uint8x16_t weights = vld1q_u8(kWeights);
    const int32x4_t all_taps = vdupq_n_s32(taps);
    const std::int32_t* limit = threshold + chunk * kLanes;
    uint8x16_t bytes[4];
    for (int g = 0; g < 4; ++g) {
      uint32x4_t below[4];
      for (int i = 0; i < 4; ++i) {
        // D < t <=> 2 * count > taps - t <=> count > floor((taps - t) / 2),
        // the halving subtraction computed without overflow.
        const int32x4_t count = vld1q_s32(counts + 16 * g + 4 * i);
        below[i] = vcgtq_s32(count, vhsubq_s32(all_taps, vld1q_s32(limit + 16 * g + 4 * i)));
      }
      bytes[g] = vandq_u8(
          EvenBytes(EvenHalves(below[0], below[1]), EvenHalves(below[2], below[3])), weights);
    }
    const uint8x8_t packed =
        PairSums(PairSums(PairSums(bytes[0], bytes[1]), PairSums(bytes[2], bytes[3])));
    const Lanes bits = vget_lane_u64(vreinterpret_u64_u8(packed), 0);
    const std::int64_t n = out_channels - chunk * kLanes;
    const Lanes valid = n >= kLanes ? ~Lanes{0} : (Lanes{1} << n) - 1;
    Store(pixel, chunk, (bits ^ flip_bits[chunk]) & valid);
  }
};

}  // namespace

void BDepthwiseRowsNeon(const DepthwiseRowsArgs& args, ParallelExecutor& executor) {
  RunDepthwiseRows<NeonCounter, NeonBitpackedSink>(args, executor);
}

}  // namespace lowbit
#endif  // LOWBIT_NEON_SIMD
