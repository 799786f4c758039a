// The NEON int8 conv (core/int8_conv2d.h), for Arm CPUs without the
// dot-product instructions (Cortex-A72: a Pi 4), aarch64 and armv7, and its
// SDOT variant for aarch64 CPUs with them (Cortex-A76: a Pi 5; at the end).
//
// Per call: the input is widened once into a padded image of int16 values
// u = x + 128 (padding u = input_zero_point + 128), as the AVX-512 VNNI
// kernel's bytes, so that the plan's packed bias serves both:
//   acc = packed_bias + sum over taps of u * w
//       = bias - (128 + zp) * sum w + sum (x + 128) * w
//       = bias + sum (x - zp) * w                         (modulo 2^32)
// where a padded tap's u * w = (128 + zp) * w cancels its share of the
// correction. u is in [0, 255] and w in [-127, 127]: every product fits the
// int16 x int16 -> int32 multiply-accumulates (vmlal_s16) exactly.
//
// The MACs: for one tap t of a pixel, the 16 output channels' weights are
// two int16x8 vectors (the plan's wide filter, [block][tap][16]) and the
// pixel's value one lane of an int16x8 load of its taps: 4 vmlal by lane
// (SMLAL / SMLAL2 by element on aarch64) add 16 products into 4 int32x4
// accumulators. A kernel row's taps are read in place from the image, 8 per
// load (with dilation_w 1 the row's kernel_w * in_c taps are contiguous;
// otherwise each of its kernel_w columns is a segment of in_c taps): a
// segment's taps go in groups of 8 lanes whose indices are compile-time
// constants (MacGroup over an integer_sequence), loads reading up to 7
// values past a segment (the image has kSlack values after it; those lanes
// are never multiplied). kPixels pixels share each weight load. QuickNet's
// stem (3x3 over 3 channels, 16 outputs): per pixel 108 vmlal, 6 loads of
// taps, 9 of weights (a pair per tap every 3 pixels), then the
// requantization: 2.12 M instructions in all (169 a pixel) on aarch64,
// 2.98 M on armv7 (qemu, tests/arm/insn_count_plugin.c).
//
// Requantization, exactly MultiplyByQuantizedMultiplier (int8_conv2d.h):
//  * x << left (wraps like the reference: vshlq_s32);
//  * the doubling high product floor((x * q + 2^30) / 2^31), saturating only
//    for x = q = INT32_MIN (q >= 0 here: never) is what SQRDMULH
//    (vqrdmulhq_s32) computes: (2 x q + 2^31) >> 32;
//  * the rounding divide by 2^r (halves away from zero): SRSHL by -r
//    (vrshlq_s32) rounds halves up, floor((h + 2^(r-1)) / 2^r), computed
//    without overflow. For h < 0 the reference's floor(h / 2^r) + [remainder
//    > 2^(r-1)] equals floor((h - 1 + 2^(r-1)) / 2^r), so negative h are
//    first decremented: h + ((h & -r) >> 31) (the sign bit of h & -r is set
//    for h < 0 and r > 0), vsraq_n_s32. h - 1 cannot wrap: with 0 <= q <
//    2^31, h >= -2^31 + 1.
// Without that fix-up a negative half rounds to n instead of n - 1 (n <= 0);
// when the clamp's low end out_min - output_zero_point is >= 0 (a ReLU) both
// clamp to it. Where in addition no lane shifts left, the `simple` variant
// (kSimple) skips the left shift and the fix-up, as the VNNI kernel does.
// The clamp and zero point: saturating narrows to int16, + zero point
// (saturating), saturating narrow to int8, then min/max in int8: a value
// that saturates is beyond [-128, 127] on the same side as the exact
// v + zero_point, so the clamp to [out_min, out_max] gives the same code.
#include "custom_ops/core/int8_conv2d.h"

#if LOWBIT_INT8_CONV_NEON

#include <arm_neon.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <utility>

#include "custom_ops/core/scratch.h"

#define LOWBIT_INT8_NEON_INLINE __attribute__((always_inline)) inline

namespace lowbit {
namespace {

// Pixels per step: 3 x 4 int32x4 accumulators, 3 tap vectors and the weight
// vectors in aarch64's 32 vector registers (QuickNet's stem, dynamic
// instructions under qemu: 2.12 M with 3 pixels, 2.11 M with 4 but nearly
// every register taken, 2.18 M with 2); armv7 has 16 (as q registers).
#if defined(__aarch64__)
constexpr int kPixels = 3;
#else
constexpr int kPixels = 2;
#endif

// int16 values after the last padded image: the 8-lane loads of a
// segment's last group read up to 7 past the last tap of the image.
constexpr int kSlack = 16;

// 16 channels' accumulators of one pixel.
using Acc = int32x4_t[4];

// acc[channel] += w[channel] * lane L of x, channels 0-7 in w0, 8-15 in w1.
template <int L>
LOWBIT_INT8_NEON_INLINE void MacLane(Acc& acc, int16x8_t w0, int16x8_t w1, int16x8_t x) {
#if defined(__aarch64__)
  acc[0] = vmlal_laneq_s16(acc[0], vget_low_s16(w0), x, L);
  acc[1] = vmlal_high_laneq_s16(acc[1], w0, x, L);
  acc[2] = vmlal_laneq_s16(acc[2], vget_low_s16(w1), x, L);
  acc[3] = vmlal_high_laneq_s16(acc[3], w1, x, L);
#else
  // armv7 multiplies by a lane of a d register (the halves of a q register).
  const int16x4_t half = L < 4 ? vget_low_s16(x) : vget_high_s16(x);
  acc[0] = vmlal_lane_s16(acc[0], vget_low_s16(w0), half, L % 4);
  acc[1] = vmlal_lane_s16(acc[1], vget_high_s16(w0), half, L % 4);
  acc[2] = vmlal_lane_s16(acc[2], vget_low_s16(w1), half, L % 4);
  acc[3] = vmlal_lane_s16(acc[3], vget_high_s16(w1), half, L % 4);
#endif
}

// Tap L of a group for every pixel: one load of its 16 weights.
template <int P, int L>
LOWBIT_INT8_NEON_INLINE void MacTap(Acc (&acc)[P], const int16x8_t (&x)[P], const std::int16_t* w) {
  const int16x8_t w0 = vld1q_s16(w + 16 * L), w1 = vld1q_s16(w + 16 * L + 8);
  for (int j = 0; j < P; ++j) MacLane<L>(acc[j], w0, w1, x[j]);
}

// sizeof...(L) (1-8) consecutive taps from `x` (pixel j's at x + j * pitch)
// against their weights `w` ([tap][16]).
template <int P, int... L>
LOWBIT_INT8_NEON_INLINE void MacGroup(Acc (&acc)[P], const std::int16_t* x, std::int64_t pitch,
                                      const std::int16_t* w, std::integer_sequence<int, L...>) {
  int16x8_t v[P];
  for (int j = 0; j < P; ++j) v[j] = vld1q_s16(x + j * pitch);
  (MacTap<P, L>(acc, v, w), ...);
}

// n consecutive taps (a segment). Inlined into callers that know n at
// compile time, the switch folds away.
template <int P>
LOWBIT_INT8_NEON_INLINE void MacSegment(Acc (&acc)[P], const std::int16_t* x, std::int64_t pitch,
                                        const std::int16_t* w, int n) {
  for (; n >= 8; n -= 8, x += 8, w += 8 * 16) {
    MacGroup<P>(acc, x, pitch, w, std::make_integer_sequence<int, 8>());
  }
  switch (n) {
    case 1: MacGroup<P>(acc, x, pitch, w, std::make_integer_sequence<int, 1>()); break;
    case 2: MacGroup<P>(acc, x, pitch, w, std::make_integer_sequence<int, 2>()); break;
    case 3: MacGroup<P>(acc, x, pitch, w, std::make_integer_sequence<int, 3>()); break;
    case 4: MacGroup<P>(acc, x, pitch, w, std::make_integer_sequence<int, 4>()); break;
    case 5: MacGroup<P>(acc, x, pitch, w, std::make_integer_sequence<int, 5>()); break;
    case 6: MacGroup<P>(acc, x, pitch, w, std::make_integer_sequence<int, 6>()); break;
    case 7: MacGroup<P>(acc, x, pitch, w, std::make_integer_sequence<int, 7>()); break;
    default: break;
  }
}

// The per-lane constants of one block of 16 output channels (the header's
// comment for the arithmetic).
struct Requant {
  int32x4_t left[4], multiplier[4], right[4];  // right: minus the right shift
  int16x8_t zero_point;
  int8x16_t low, high;
  bool simple;  // no lane shifts left, and the clamp's low end is >= 0

  Requant(const Int8Conv2DPlan& plan, int block, const Int8Conv2DParams& p) {
    const int at = block * 16;
    bool any_left = false;
    for (int i = 0; i < 4; ++i) {
      left[i] = vld1q_s32(plan.left_shift() + at + 4 * i);
      multiplier[i] = vld1q_s32(plan.packed_multiplier() + at + 4 * i);
      right[i] = vnegq_s32(vld1q_s32(plan.right_shift() + at + 4 * i));
    }
    for (int lane = 0; lane < 16; ++lane) any_left = any_left || plan.left_shift()[at + lane] > 0;
    zero_point = vdupq_n_s16(static_cast<std::int16_t>(p.output_zero_point));
    low = vdupq_n_s8(static_cast<std::int8_t>(p.out_min));
    high = vdupq_n_s8(static_cast<std::int8_t>(p.out_max));
    simple = !any_left && p.out_min - p.output_zero_point >= 0;
  }

  // One pixel's 16 channels as their output codes.
  template <bool kSimple>
  LOWBIT_INT8_NEON_INLINE int8x16_t Bytes(const Acc& acc) const {
    int32x4_t v[4];
    for (int i = 0; i < 4; ++i) {
      int32x4_t x = kSimple ? acc[i] : vshlq_s32(acc[i], left[i]);
      x = vqrdmulhq_s32(x, multiplier[i]);
      if (!kSimple) x = vsraq_n_s32(x, vandq_s32(x, right[i]), 31);
      v[i] = vrshlq_s32(x, right[i]);
    }
    const int16x8_t v01 = vqaddq_s16(vcombine_s16(vqmovn_s32(v[0]), vqmovn_s32(v[1])), zero_point);
    const int16x8_t v23 = vqaddq_s16(vcombine_s16(vqmovn_s32(v[2]), vqmovn_s32(v[3])), zero_point);
    const int8x16_t codes = vcombine_s8(vqmovn_s16(v01), vqmovn_s16(v23));
    return vminq_s8(vmaxq_s8(codes, low), high);
  }
};

// P pixels' codes stored, `lanes` of each pixel's 16 (`out` the first
// pixel's, `pitch` bytes apart).
template <int P>
LOWBIT_INT8_NEON_INLINE void StoreCodes(const int8x16_t (&codes)[P], int lanes, std::int8_t* out,
                                        std::int64_t pitch) {
  for (int j = 0; j < P; ++j) {
    if (lanes == 16) {
      vst1q_s8(out + j * pitch, codes[j]);
    } else {
      std::int8_t bytes[16];
      vst1q_s8(bytes, codes[j]);
      std::memcpy(out + j * pitch, bytes, static_cast<std::size_t>(lanes));
    }
  }
}

// Where the kernel reads a pixel's taps: kernel row kh's segment s starts at
// first + pixel * pixel_pitch + kh * kernel_row_pitch + s * segment_pitch
// and holds segment_taps consecutive taps (the filter's (kw, i) order).
struct Taps {
  const std::int16_t* first;
  std::int64_t pixel_pitch, kernel_row_pitch, segment_pitch;
  int kernel_h, segments, segment_taps;
};

// P pixels' 16 channels of one block, requantized and stored (`out` the
// first pixel's, `pitch` bytes apart; `lanes` of the 16 channels are
// outputs). kKernelH, kSegmentTaps > 0: the kernel's height (with one
// segment per kernel row) and the segment's length known at compile time:
// unrolled, GCC keeps the accumulators in place (a loop over kernel rows
// costs it ~9 register moves per 16 products).
template <int P, int kKernelH, int kSegmentTaps, bool kSimple>
LOWBIT_INT8_NEON_INLINE void DotAndStore(const Taps& taps, int pixel, const std::int16_t* weights,
                                         int32x4_t const (&bias)[4], const Requant& requant,
                                         int lanes, std::int8_t* out, std::int64_t pitch) {
  const int n = kSegmentTaps > 0 ? kSegmentTaps : taps.segment_taps;
  const int kernel_h = kKernelH > 0 ? kKernelH : taps.kernel_h;
  const int segments = kKernelH > 0 ? 1 : taps.segments;
  Acc acc[P];
  for (int j = 0; j < P; ++j) {
    for (int i = 0; i < 4; ++i) acc[j][i] = bias[i];
  }
  const std::int16_t* first = taps.first + pixel * taps.pixel_pitch;
  const std::int16_t* w = weights;
#pragma GCC unroll 4
  for (int kh = 0; kh < kernel_h; ++kh) {
    const std::int16_t* row = first + kh * taps.kernel_row_pitch;
    for (int s = 0; s < segments; ++s, w += n * 16) {
      MacSegment<P>(acc, row + s * taps.segment_pitch, taps.pixel_pitch, w, n);
    }
  }
  // Every pixel's codes before any store: a byte store may alias anything,
  // so the requantization's constants would be reloaded after each.
  int8x16_t codes[P];
  for (int j = 0; j < P; ++j) codes[j] = requant.template Bytes<kSimple>(acc[j]);
  StoreCodes<P>(codes, lanes, out, pitch);
}

// One output row's pixels for one block of 16 channels.
template <int kKernelH, int kSegmentTaps, bool kSimple>
void BlockRow(const Taps& taps, int out_w, const std::int16_t* weights,
              int32x4_t const (&bias)[4], const Requant& requant, int lanes, std::int8_t* out,
              std::int64_t pitch) {
  int ow = 0;
  for (; ow + kPixels <= out_w; ow += kPixels) {
    DotAndStore<kPixels, kKernelH, kSegmentTaps, kSimple>(taps, ow, weights, bias, requant, lanes,
                                                out + ow * pitch, pitch);
  }
  for (; ow < out_w; ++ow) {
    DotAndStore<1, kKernelH, kSegmentTaps, kSimple>(taps, ow, weights, bias, requant, lanes,
                                          out + ow * pitch, pitch);
  }
}

// BlockRow with 3x3 kernels over 1-3 channels (stems over gray and RGB
// images, dilation_w 1) unrolled; anything else runs the kernel rows, their
// segments and MacSegment's groups in loops.
template <bool kSimple>
void AnyBlockRow(const Taps& taps, int out_w, const std::int16_t* weights,
                 int32x4_t const (&bias)[4], const Requant& requant, int lanes,
                 std::int8_t* out, std::int64_t pitch) {
  const bool unrolled = taps.kernel_h == 3 && taps.segments == 1;
  switch (unrolled ? taps.segment_taps : 0) {
    case 3:
      BlockRow<3, 3, kSimple>(taps, out_w, weights, bias, requant, lanes, out, pitch);
      break;
    case 6:
      BlockRow<3, 6, kSimple>(taps, out_w, weights, bias, requant, lanes, out, pitch);
      break;
    case 9:
      BlockRow<3, 9, kSimple>(taps, out_w, weights, bias, requant, lanes, out, pitch);
      break;
    default:
      BlockRow<0, 0, kSimple>(taps, out_w, weights, bias, requant, lanes, out, pitch);
  }
}

// Output rows [begin, end) (row = batch * out_h + oh) from the padded image
// (`row_values` int16 values per padded row, `image_values` per image).
void ConvRows(const Int8Conv2DPlan& plan, const Int8Conv2DParams p, const std::int16_t* padded,
              std::int64_t image_values, std::int64_t row_values, std::int8_t* output,
              std::int64_t begin, std::int64_t end) {
  const int c = p.in_c;
  const int taps_per_pixel = p.kernel_h * p.kernel_w * c;
  // dilation_w 1: a kernel row's taps are one segment; else one per column.
  const bool contiguous = p.dilation_w == 1;
  for (std::int64_t row = begin; row < end; ++row) {
    const int b = static_cast<int>(row / p.out_h), oh = static_cast<int>(row % p.out_h);
    const Taps taps{padded + b * image_values +
                        static_cast<std::int64_t>(oh) * p.stride_h * row_values,
                    static_cast<std::int64_t>(p.stride_w) * c,
                    static_cast<std::int64_t>(p.dilation_h) * row_values,
                    static_cast<std::int64_t>(p.dilation_w) * c,
                    p.kernel_h,
                    contiguous ? 1 : p.kernel_w,
                    contiguous ? p.kernel_w * c : c};
    std::int8_t* out = output + row * p.out_w * p.out_c;
    for (int block = 0; block < plan.channel_blocks(); ++block) {
      const Requant requant(plan, block, p);
      int32x4_t bias[4];
      for (int i = 0; i < 4; ++i) bias[i] = vld1q_s32(plan.packed_bias() + block * 16 + 4 * i);
      const std::int16_t* weights =
          plan.wide_filter() + static_cast<std::size_t>(block) * taps_per_pixel * 16;
      const int lanes = std::min(16, p.out_c - block * 16);
      if (requant.simple) {
        AnyBlockRow<true>(taps, p.out_w, weights, bias, requant, lanes, out + block * 16,
                          p.out_c);
      } else {
        AnyBlockRow<false>(taps, p.out_w, weights, bias, requant, lanes, out + block * 16,
                           p.out_c);
      }
    }
  }
}

#if LOWBIT_INT8_CONV_SDOT
// ---- The SDOT variant (aarch64 CPUs with the dot-product instructions) ----
//
// The AVX-512 VNNI kernel's scheme on 128-bit vectors: the plan's
// packed_filter() ([block][kh][row_groups][16 channels][4 bytes]: each
// kernel row's taps padded with zero weights to groups of 4) against the
// input bytes read in place from a padded int8 image (padding =
// input_zero_point). SDOT by element, vdotq_laneq_s32(acc, w, x, g), adds
// for 4 channels the 4-byte dot product of their weights with group g of
// the 16 input bytes x, so a kernel row of a pixel is one 16-byte load per 4
// groups and 4 SDOT per group for 16 channels (QuickNet's stem: 3 loads and
// 36 SDOT a pixel where the SMLAL kernel does 108 SMLAL). The bytes past a
// row's taps meet zero weights. SDOT multiplies signed bytes, so with
// dot_bias = bias - zp * sum w (the plan's sdot_bias()):
//   acc = dot_bias + sum over taps of x * w = bias + sum (x - zp) * w
// where a padded tap's x = zp cancels its share. Only dilation_w 1 (rows
// read in place); the SMLAL kernel takes the others.
#define LOWBIT_SDOT __attribute__((target("arch=armv8.2-a+dotprod")))

// Group G of 16 channels' weights `w` ([G][16][4 bytes]) with group G of x.
template <int P, int G>
LOWBIT_SDOT LOWBIT_INT8_NEON_INLINE void DotGroup(Acc (&acc)[P], const int8x16_t (&x)[P],
                                                  const std::int8_t* w) {
  const std::int8_t* wg = w + G * 64;
  const int8x16_t w0 = vld1q_s8(wg), w1 = vld1q_s8(wg + 16), w2 = vld1q_s8(wg + 32),
                  w3 = vld1q_s8(wg + 48);
  for (int j = 0; j < P; ++j) {
    acc[j][0] = vdotq_laneq_s32(acc[j][0], w0, x[j], G);
    acc[j][1] = vdotq_laneq_s32(acc[j][1], w1, x[j], G);
    acc[j][2] = vdotq_laneq_s32(acc[j][2], w2, x[j], G);
    acc[j][3] = vdotq_laneq_s32(acc[j][3], w3, x[j], G);
  }
}

template <int P, int... G>
LOWBIT_SDOT LOWBIT_INT8_NEON_INLINE void DotGroups(Acc (&acc)[P], const int8x16_t (&x)[P],
                                                   const std::int8_t* w,
                                                   std::integer_sequence<int, G...>) {
  (DotGroup<P, G>(acc, x, w), ...);
}

// Where the SDOT kernel reads: kernel row kh of pixel `pixel` starts at
// first + pixel * pixel_pitch + kh * kernel_row_pitch (bytes).
struct ByteTaps {
  const std::int8_t* first;
  std::int64_t pixel_pitch, kernel_row_pitch;
  int kernel_h, row_groups;
};

// DotAndStore for SDOT; kRowGroups > 0: row_groups known at compile time.
template <int P, int kRowGroups, bool kSimple>
LOWBIT_SDOT LOWBIT_INT8_NEON_INLINE void SdotAndStore(const ByteTaps& taps, int pixel,
                                                      const std::int8_t* weights,
                                                      int32x4_t const (&bias)[4],
                                                      const Requant& requant, int lanes,
                                                      std::int8_t* out, std::int64_t pitch) {
  const int row_groups = kRowGroups > 0 ? kRowGroups : taps.row_groups;
  Acc acc[P];
  for (int j = 0; j < P; ++j) {
    for (int i = 0; i < 4; ++i) acc[j][i] = bias[i];
  }
  const std::int8_t* first = taps.first + pixel * taps.pixel_pitch;
  const std::int8_t* w = weights;
  for (int kh = 0; kh < taps.kernel_h; ++kh) {
    const std::int8_t* row = first + kh * taps.kernel_row_pitch;
    for (int g = 0; g < row_groups; g += 4) {  // 4 groups per 16-byte load
      int8x16_t x[P];
      for (int j = 0; j < P; ++j) x[j] = vld1q_s8(row + j * taps.pixel_pitch + g * 4);
      const int n = std::min(4, row_groups - g);
      switch (n) {
        case 1: DotGroups<P>(acc, x, w, std::make_integer_sequence<int, 1>()); break;
        case 2: DotGroups<P>(acc, x, w, std::make_integer_sequence<int, 2>()); break;
        case 3: DotGroups<P>(acc, x, w, std::make_integer_sequence<int, 3>()); break;
        default: DotGroups<P>(acc, x, w, std::make_integer_sequence<int, 4>()); break;
      }
      w += n * 64;
    }
  }
  int8x16_t codes[P];  // before any store (DotAndStore)
  for (int j = 0; j < P; ++j) codes[j] = requant.template Bytes<kSimple>(acc[j]);
  StoreCodes<P>(codes, lanes, out, pitch);
}

// 4 pixels a step: 16 accumulators, 4 input and 4 weight vectors.
constexpr int kSdotPixels = 4;

template <int kRowGroups, bool kSimple>
LOWBIT_SDOT void SdotBlockRow(const ByteTaps& taps, int out_w, const std::int8_t* weights,
                              int32x4_t const (&bias)[4], const Requant& requant, int lanes,
                              std::int8_t* out, std::int64_t pitch) {
  int ow = 0;
  for (; ow + kSdotPixels <= out_w; ow += kSdotPixels) {
    SdotAndStore<kSdotPixels, kRowGroups, kSimple>(taps, ow, weights, bias, requant, lanes,
                                                   out + ow * pitch, pitch);
  }
  for (; ow < out_w; ++ow) {
    SdotAndStore<1, kRowGroups, kSimple>(taps, ow, weights, bias, requant, lanes,
                                         out + ow * pitch, pitch);
  }
}

// Kernel rows of 1-3 groups (up to 12 bytes: 3x3 over 1-4 channels)
// unrolled, the rest in loops.
template <bool kSimple>
LOWBIT_SDOT void AnySdotBlockRow(const ByteTaps& taps, int out_w, const std::int8_t* weights,
                                 int32x4_t const (&bias)[4], const Requant& requant, int lanes,
                                 std::int8_t* out, std::int64_t pitch) {
  switch (taps.row_groups) {
    case 1:
      SdotBlockRow<1, kSimple>(taps, out_w, weights, bias, requant, lanes, out, pitch);
      break;
    case 2:
      SdotBlockRow<2, kSimple>(taps, out_w, weights, bias, requant, lanes, out, pitch);
      break;
    case 3:
      SdotBlockRow<3, kSimple>(taps, out_w, weights, bias, requant, lanes, out, pitch);
      break;
    default:
      SdotBlockRow<0, kSimple>(taps, out_w, weights, bias, requant, lanes, out, pitch);
  }
}

LOWBIT_SDOT void SdotRows(const Int8Conv2DPlan& plan, const Int8Conv2DParams p,
                          const std::int8_t* padded, std::int64_t image_bytes,
                          std::int64_t row_bytes, std::int8_t* output, std::int64_t begin,
                          std::int64_t end) {
  const int c = p.in_c;
  for (std::int64_t row = begin; row < end; ++row) {
    const int b = static_cast<int>(row / p.out_h), oh = static_cast<int>(row % p.out_h);
    const ByteTaps taps{
        padded + b * image_bytes + static_cast<std::int64_t>(oh) * p.stride_h * row_bytes,
        static_cast<std::int64_t>(p.stride_w) * c,
        static_cast<std::int64_t>(p.dilation_h) * row_bytes, p.kernel_h, plan.row_groups()};
    std::int8_t* out = output + row * p.out_w * p.out_c;
    for (int block = 0; block < plan.channel_blocks(); ++block) {
      const Requant requant(plan, block, p);
      int32x4_t bias[4];
      for (int i = 0; i < 4; ++i) bias[i] = vld1q_s32(plan.sdot_bias() + block * 16 + 4 * i);
      const std::int8_t* weights =
          plan.packed_filter() + static_cast<std::size_t>(block) * plan.groups() * 64;
      const int lanes = std::min(16, p.out_c - block * 16);
      if (requant.simple) {
        AnySdotBlockRow<true>(taps, p.out_w, weights, bias, requant, lanes, out + block * 16,
                              p.out_c);
      } else {
        AnySdotBlockRow<false>(taps, p.out_w, weights, bias, requant, lanes, out + block * 16,
                               p.out_c);
      }
    }
  }
}
#endif  // LOWBIT_INT8_CONV_SDOT

// The padded input images of the batch in the int8 conv image scratch
// (ComputeInt8PaddedImage's geometry, counted in elements of T), then kSlack
// zeros: `pad_value` around each image, and each input row of in_w * in_c
// codes as copy_row(src, dst, count) writes it.
template <typename T, class CopyRow>
T* PaddedImages(const Int8Conv2DParams& p, const std::int8_t* input, const Int8PaddedImage& shape,
                T pad_value, CopyRow&& copy_row) {
  const std::int64_t row_values = shape.row_values, image_values = shape.image_values;
  auto* padded = static_cast<T*>(ScratchBytes(
      ScratchSlot::kInt8ConvImage,
      static_cast<std::int64_t>(sizeof(T)) * (image_values * p.batch + kSlack)));
  const std::int64_t in_row_values = static_cast<std::int64_t>(p.in_w) * p.in_c;
  const std::int64_t left_values = static_cast<std::int64_t>(p.pad_left) * p.in_c;
  for (int b = 0; b < p.batch; ++b) {
    T* image = padded + b * image_values;
    // Padding rows above and below the image, then per image row its left
    // and right padding around the copied input.
    std::fill(image, image + p.pad_top * row_values, pad_value);
    std::fill(image + static_cast<std::int64_t>(p.pad_top + p.in_h) * row_values,
              image + image_values, pad_value);
    for (int ih = 0; ih < p.in_h; ++ih) {
      T* line = image + (ih + p.pad_top) * row_values;
      std::fill(line, line + left_values, pad_value);
      copy_row(input + (static_cast<std::int64_t>(b) * p.in_h + ih) * in_row_values,
               line + left_values, in_row_values);
      std::fill(line + left_values + in_row_values, line + row_values, pad_value);
    }
  }
  // The slack after the last image: loaded, never multiplied (or met by
  // zero weights and unused lanes).
  std::fill(padded + p.batch * image_values, padded + p.batch * image_values + kSlack, T{0});
  return padded;
}

}  // namespace

void Int8Conv2DNeon(const Int8Conv2DPlan& plan, const Int8Conv2DParams& params,
                    const std::int8_t* input, std::int8_t* output, ParallelExecutor& executor) {
  const Int8Conv2DParams& p = params;
  const int c = p.in_c;
  const Int8PaddedImage shape = ComputeInt8PaddedImage(p);  // of int16 values
  const std::int64_t row_values = shape.row_values, image_values = shape.image_values;
  const int8x8_t minus_128 = vdup_n_s8(-128);
  // The image of u = x + 128, its padding the zero point's.
  const std::int16_t* padded = PaddedImages(
      p, input, shape, static_cast<std::int16_t>(p.input_zero_point + 128),
      [minus_128](const std::int8_t* src, std::int16_t* dst, std::int64_t n) {
        std::int64_t i = 0;
        for (; i + 16 <= n; i += 16) {  // x - (-128): exact in int16
          const int8x16_t x = vld1q_s8(src + i);
          vst1q_s16(dst + i, vsubl_s8(vget_low_s8(x), minus_128));
          vst1q_s16(dst + i + 8, vsubl_s8(vget_high_s8(x), minus_128));
        }
        for (; i < n; ++i) dst[i] = static_cast<std::int16_t>(src[i] + 128);
      });

  const std::int64_t out_rows = static_cast<std::int64_t>(p.batch) * p.out_h;
  executor.ParallelFor(
      out_rows,
      static_cast<std::int64_t>(p.out_w) * p.kernel_h * p.kernel_w * c * plan.channel_blocks(),
      [&](std::int64_t begin, std::int64_t end) {
        ConvRows(plan, params, padded, image_values, row_values, output, begin, end);
      });
}

#if LOWBIT_INT8_CONV_SDOT
void Int8Conv2DNeonSdot(const Int8Conv2DPlan& plan, const Int8Conv2DParams& params,
                        const std::int8_t* input, std::int8_t* output,
                        ParallelExecutor& executor) {
  const Int8Conv2DParams& p = params;
  if (p.dilation_w != 1) {  // its rows are not read in place (see SdotRows)
    Int8Conv2DNeon(plan, params, input, output, executor);
    return;
  }
  // The padded image as Int8Conv2DNeon's, of bytes x (padding zp).
  const Int8PaddedImage shape = ComputeInt8PaddedImage(p);
  const std::int64_t row_bytes = shape.row_values, image_bytes = shape.image_values;
  const std::int8_t* padded =
      PaddedImages(p, input, shape, static_cast<std::int8_t>(p.input_zero_point),
                   [](const std::int8_t* src, std::int8_t* dst, std::int64_t n) {
                     std::memcpy(dst, src, static_cast<std::size_t>(n));
                   });
  const std::int64_t out_rows = static_cast<std::int64_t>(p.batch) * p.out_h;
  executor.ParallelFor(
      out_rows, static_cast<std::int64_t>(p.out_w) * plan.groups() * plan.channel_blocks(),
      [&](std::int64_t begin, std::int64_t end) {
        SdotRows(plan, params, padded, image_bytes, row_bytes, output, begin, end);
      });
}
#endif  // LOWBIT_INT8_CONV_SDOT

}  // namespace lowbit

#endif  // LOWBIT_INT8_CONV_NEON
