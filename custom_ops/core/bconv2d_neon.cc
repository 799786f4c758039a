// The SIMD binary convolution (core/bconv2d_simd.h) with Arm NEON, for
// aarch64 (Raspberry Pi 3/4/5 with a 64-bit OS, Android arm64) and armv7 with
// NEON (Raspberry Pi OS 32-bit): 4 output channels per 128-bit q register.
//
// Popcount: NEON has no 32-bit-lane popcount, but VCNT counts the bits of
// every byte. Those byte counts (<= 8) are summed in 8-bit lanes for up to
// kMaxByteSteps words, then folded into the 32-bit channel lanes with two
// pairwise widening adds, VPADDL.U8 then VPADDL.U16 (the "vcnt + vpadal"
// scheme): the four bytes of a 32-bit lane belong to the same channel.
#include "custom_ops/core/bconv2d_kernels.h"

#if LOWBIT_NEON_SIMD

#include <arm_neon.h>

#include "custom_ops/core/bconv2d_simd.h"
#include "custom_ops/core/bgemv_simd.h"

namespace lowbit {
namespace {

// Tile: kNeonTilePixels pixels x 2 q registers (8 channels): aarch64 has 32 q
// registers and takes 4 pixels (8 + 8 accumulators, 2 filter vectors,
// temporaries); armv7 has 16 and takes 2 (bconv2d_<P>x8_neon).
struct Neon {
  using IVec = uint32x4_t;
  using FVec = float32x4_t;
  static constexpr int kLanes = 4;
  static constexpr int kBlockVectors = 2;
  static constexpr int kBlockWidth = kNeonBlockWidth;
  static constexpr int kTilePixels = kNeonTilePixels;
  static constexpr bool kBytePopcount = true;

  static IVec Zero() { return vdupq_n_u32(0); }
  static IVec Load(const void* p) { return vld1q_u32(static_cast<const std::uint32_t*>(p)); }
  static void Store(std::int32_t* p, IVec v) { vst1q_s32(p, vreinterpretq_s32_u32(v)); }
  static IVec Broadcast(const PackedWord* p) { return vld1q_dup_u32(p); }
  static IVec Set32(std::int32_t v) { return vdupq_n_u32(static_cast<std::uint32_t>(v)); }
  static IVec Xor(IVec a, IVec b) { return veorq_u32(a, b); }
  static IVec Add8(IVec a, IVec b) {
    return vreinterpretq_u32_u8(vaddq_u8(vreinterpretq_u8_u32(a), vreinterpretq_u8_u32(b)));
  }
  static IVec Add32(IVec a, IVec b) { return vaddq_u32(a, b); }
  static IVec Sub32(IVec a, IVec b) { return vsubq_u32(a, b); }
  static IVec PopcountBytes(IVec a) {
    return vreinterpretq_u32_u8(vcntq_u8(vreinterpretq_u8_u32(a)));
  }
  static IVec Popcount32(IVec a) { return SumBytesPerLane(PopcountBytes(a)); }
  static IVec SumBytesPerLane(IVec a) {
    return vpaddlq_u16(vpaddlq_u8(vreinterpretq_u8_u32(a)));
  }

  static FVec ZeroF() { return vdupq_n_f32(0.0f); }
  // NEON has no masked loads or stores: a partial vector goes through a
  // small stack buffer (only the last channel block of a layer).
  static FVec LoadF(const float* p, int n) {
    if (n >= kLanes) return vld1q_f32(p);
    float tmp[kLanes] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int i = 0; i < n; ++i) tmp[i] = p[i];
    return vld1q_f32(tmp);
  }
  static void StoreF(float* p, FVec v, int n) {
    if (n >= kLanes) {
      vst1q_f32(p, v);
      return;
    }
    float tmp[kLanes];
    vst1q_f32(tmp, v);
    for (int i = 0; i < n; ++i) p[i] = tmp[i];
  }
  static FVec ToFloat(IVec a) { return vcvtq_f32_s32(vreinterpretq_s32_u32(a)); }
  static FVec MulF(FVec a, FVec b) { return vmulq_f32(a, b); }
  static FVec AddF(FVec a, FVec b) { return vaddq_f32(a, b); }
  // x86 semantics of maxps, which the kernel relies on (see bconv2d_simd.h):
  // b < a ? a : b, so that -0.0 and NaN in b pass through unchanged, as in
  // the reference's `if (y < 0) y = 0` (VMAX would turn NaN and -0.0 around).
  static FVec MaxF(FVec a, FVec b) { return vbslq_f32(vcltq_f32(b, a), a, b); }
};

}  // namespace

void BConv2DNeon(const SimdConvArgs& args, ParallelExecutor& executor) {
  BConv2DSimd<Neon>(args, executor);
}

// GEMV budget in byte accumulators (plus up to as many 32-bit ones): 8 of
// the 32 q registers on aarch64 (1 row: 2 blocks x 2 sets), 4 of the 16 on
// armv7 (2 blocks, 1 set).
#if defined(__aarch64__)
constexpr int kNeonGemvAccumulators = 8;
#else
constexpr int kNeonGemvAccumulators = 4;
#endif
void BGemvNeon(const SimdGemvArgs& args, ParallelExecutor& executor) {
  BGemvSimd<Neon, kNeonGemvAccumulators>(args, executor);
}

}  // namespace lowbit
#endif  // LOWBIT_NEON_SIMD
