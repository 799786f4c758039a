// The AVX-512 VNNI int8 conv (core/int8_conv2d.h), built with
// -mavx512f -mavx512bw -mavx512vl -mavx512vnni and entered only after the
// run-time CPU check (Int8Conv2DHasFastPath).
//
// Per call: the input is copied once into a padded image of bytes
// u = x ^ 0x80 = x + 128, padding u = input_zero_point + 128 (so padded taps
// cancel against the packed bias, see Int8Conv2DPlan). With dilation_w 1 a
// pixel's taps in kernel row kh are kernel_w * in_c contiguous bytes of that
// image: the kernel reads them in place, as row_groups = ceil(kernel_w *
// in_c / 4) dwords from the pixel's address (vpbroadcastd from memory), no
// copies. The last dword's bytes past the row's taps belong to the next
// pixel (or the next image row, or the slack after the last image); the plan
// gives them ZERO weights, so they add u * 0 = 0 and the correction term in
// the packed bias stays (128 + zp) * (sum of the K real weights):
//   acc = bias - (128 + zp) * sum w + sum over real taps of (x + 128) * w
//       = bias + sum over real taps of (x - zp) * w        (modulo 2^32)
// For QuickNet's stem (3x3 over 3 channels) that is 3 x 3 vpdpbusd per pixel
// and 16 channels (27 products in 36 byte lanes) where a gathered patch took
// 7 (28), but the gather's copies (and its loads from just-stored,
// overlapping copies) cost more than the 2 extra vpdpbusd. With dilation_w
// > 1 the taps are gathered first, each kernel row into its row_groups * 4
// bytes of a patch, so the same weights serve. Per 8 pixels and 16 output
// channels: eight independent accumulators; 3 kernel rows of 1-4 dwords
// (3x3 over 1-5 channels) are unrolled at compile time. Then the exact
// requantization in vectors: one 64-bit rounding per lane for
// MultiplyByQuantizedMultiplier (Requant), and with 16 output channels the
// clamp and zero point in int16 and 4 pixels per 64-byte store.
// QuickNet's stem (224x224x3 -> 16, 3x3 s2, ReLU), 1 thread, Sapphire Rapids
// class: 0.052-0.060 ms (int8_conv2d_check --time; 0.092-0.103 ms with the
// gather and the two-step requantization before, same runs); XNNPACK's int8
// (AMX) ~0.45 ms, its float32 ~0.16 ms. It is bound by port 0: per pixel 9
// vpdpbusd, 2 vpmuldq, 2 vpsravq (the rest of the requantization is placed
// on port 5: vpshufd, vpermt2d, the packs).
#include "custom_ops/core/int8_conv2d.h"

#if LOWBIT_INT8_CONV_VNNI
#if !defined(__AVX512VNNI__) || !defined(__AVX512BW__) || !defined(__AVX512VL__)
#error "int8_conv2d_avx512vnni.cc must be compiled with -mavx512f -mavx512bw -mavx512vl -mavx512vnni"
#endif

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "custom_ops/core/scratch.h"

// GCC's AVX-512 intrinsics start from _mm512_undefined_*() (see
// core/bdepthwise_avx512.cc): false -Wmaybe-uninitialized reports.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace lowbit {
namespace {

// The first n (1..63) of 64 byte lanes.
inline __mmask64 ByteMask(int n) { return (1ULL << n) - 1; }

// Copies n bytes in 16-byte steps, reading and writing up to 15 bytes past
// them (the gather, dilation_w > 1): the padded image and the patches have
// kSlack bytes to spare, and the patch bytes written past a tap are
// rewritten by the next tap or kernel row or patch (written after it) or are
// a kernel row's tail, which meets zero weights. (Masked byte stores of
// exactly n bytes were 1/4 of the kernel's time.) The in-place reads
// (dilation_w 1) go at most 3 bytes past a kernel row's taps: row_groups * 4
// <= kernel_w * in_c + 3, and the last output column's taps end at or before
// the end of its image row (the image is as wide as the last tap), so the
// farthest read ends 3 bytes past the last image: inside the slack.
constexpr int kSlack = 64;
inline void CopyBytes(std::uint8_t* dst, const std::uint8_t* src, int n) {
  for (int i = 0; i < n; i += 16) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i),
                     _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i)));
  }
}

// The per-lane constants of one block of 16 output channels.
//
// MultiplyByQuantizedMultiplier in one rounding. With a = x * q (64 bits,
// never saturating: q >= 0) and r = the right shift, the reference computes
// h = floor((a + 2^30) / 2^31), then rounds h / 2^r to nearest, halves away
// from zero: floor((h + 2^(r-1)) / 2^r) for h >= 0, floor((h + 2^(r-1) - 1)
// / 2^r) for h < 0 (just h for r = 0). Since floor((floor(z) + n) / m) =
// floor((z + n) / m) for integers n and m > 0, that is
//   floor((a + nudge - [a < 0] * correction) / 2^(31 + r)),
//   nudge = 2^30 + 2^(30 + r), correction = 2^31    (r >= 1)
//   nudge = 2^30,              correction = 0       (r = 0)
// testing a < 0 where the reference tests h < 0, i.e. a < -2^30: for a in
// [-2^30, 0) h is 0, and a + nudge - 2^31 lies in [2^(30+r) - 2^31,
// 2^(30+r) - 2^30), inside [0, 2^(31+r)): the result is 0 either way.
// |a| < 2^62 and the nudge < 2^62: no 64-bit overflow. One arithmetic shift
// per 64-bit lane (31 + r <= 62) instead of a 32-bit rounding divide.
//
// Without the correction a negative half (h / 2^r = n - 1/2, n <= 0) rounds
// up to n instead of away from zero to n - 1; no other value changes. When
// the clamp's low end out_min - output_zero_point is >= 0 (a ReLU: out_min is
// the zero point), n <= 0 and n - 1 < 0 both clamp to it, so the correction
// can go. Where, in addition, no lane shifts left (multipliers < 1, as
// usual) the kernel runs the `simple` requantization: no left shift, no
// correction (template argument kSimple, not a branch per pixel).
struct Requant {
  __m512i left, multiplier_even, multiplier_odd, nudge_even, nudge_odd, correction_even,
      correction_odd, shift_even, shift_odd, low, high, zero_point;
  std::int32_t out_min, out_max, out_zero_point;
  bool simple;  // no lane shifts left, and the clamp's low end is >= 0

  Requant(const Int8Conv2DPlan& plan, int block, const Int8Conv2DParams& p) {
    const int at = block * 16;
    left = _mm512_loadu_si512(plan.left_shift() + at);
    const __m512i multiplier = _mm512_loadu_si512(plan.packed_multiplier() + at);
    multiplier_even = multiplier;  // vpmuldq reads the low half of each 64-bit lane
    multiplier_odd = _mm512_srli_epi64(multiplier, 32);
    alignas(64) std::int64_t nudge[2][8], correction[2][8], shift[2][8];
    for (int lane = 0; lane < 16; ++lane) {
      const int r = plan.right_shift()[at + lane];
      nudge[lane % 2][lane / 2] = (1LL << 30) + (r > 0 ? 1LL << (30 + r) : 0);
      correction[lane % 2][lane / 2] = r > 0 ? 1LL << 31 : 0;
      shift[lane % 2][lane / 2] = 31 + r;
    }
    nudge_even = _mm512_load_si512(nudge[0]);
    nudge_odd = _mm512_load_si512(nudge[1]);
    correction_even = _mm512_load_si512(correction[0]);
    correction_odd = _mm512_load_si512(correction[1]);
    shift_even = _mm512_load_si512(shift[0]);
    shift_odd = _mm512_load_si512(shift[1]);
    low = _mm512_set1_epi32(p.out_min - p.output_zero_point);
    high = _mm512_set1_epi32(p.out_max - p.output_zero_point);
    zero_point = _mm512_set1_epi32(p.output_zero_point);
    simple = _mm512_test_epi32_mask(left, left) == 0 && p.out_min - p.output_zero_point >= 0;
    out_min = p.out_min;
    out_max = p.out_max;
    out_zero_point = p.output_zero_point;
  }

  // The 64-bit lanes' rounded x * q (above), in their low halves.
  template <bool kSimple>
  static __m512i Round(__m512i x, __m512i multiplier, __m512i nudge, __m512i correction,
                       __m512i shift) {
    const __m512i a = _mm512_mul_epi32(x, multiplier);
    __m512i t = _mm512_add_epi64(a, nudge);
    if (!kSimple) {
      const __mmask8 negative = _mm512_cmplt_epi64_mask(a, _mm512_setzero_si512());
      t = _mm512_mask_sub_epi64(t, negative, t, correction);
    }
    return _mm512_srav_epi64(t, shift);
  }

  // MultiplyByQuantizedMultiplier per lane (int32, before the clamp).
  template <bool kSimple>
  __m512i Multiply(__m512i acc) const {
    const __m512i x = kSimple ? acc : _mm512_sllv_epi32(acc, left);
    const __m512i even =
        Round<kSimple>(x, multiplier_even, nudge_even, correction_even, shift_even);
    // The odd lanes into the low halves: vpshufd (port 5; a 64-bit shift
    // would compete with vpdpbusd, vpmuldq and vpsravq for port 0).
    const __m512i odd = Round<kSimple>(_mm512_shuffle_epi32(x, _MM_PERM_DDBB), multiplier_odd,
                                       nudge_odd, correction_odd, shift_odd);
    // Lanes 2k and 2k + 1: the low halves of even's and odd's 64-bit lane k.
    const __m512i interleave =
        _mm512_set_epi32(30, 14, 28, 12, 26, 10, 24, 8, 22, 6, 20, 4, 18, 2, 16, 0);
    return _mm512_permutex2var_epi32(even, interleave, odd);
  }

  // One pixel's 16 channels: clamped, + zero point, as bytes.
  template <bool kSimple>
  __m128i Bytes(__m512i acc) const {
    const __m512i v = _mm512_min_epi32(_mm512_max_epi32(Multiply<kSimple>(acc), low), high);
    return _mm512_cvtepi32_epi8(_mm512_add_epi32(v, zero_point));
  }

  // Four pixels' 16 channels as their 64 output bytes, pixel after pixel:
  // the clamp and the zero point in int16 on two pixels a vector. vpackssdw
  // saturates v to int16 and vpaddsw saturates v + zero point: a value that
  // saturates is beyond [-128, 127] on the same side as the exact one, so the
  // clamp to [out_min, out_max] gives the same code.
  template <bool kSimple>
  __m512i Bytes4(__m512i acc0, __m512i acc1, __m512i acc2, __m512i acc3) const {
    const __m512i zero_point16 = _mm512_set1_epi16(static_cast<short>(out_zero_point));
    const __m512i low16 = _mm512_set1_epi16(static_cast<short>(out_min));
    const __m512i high16 = _mm512_set1_epi16(static_cast<short>(out_max));
    // Per 128-bit lane k: pixel 0's then pixel 1's channels 4k..4k+3.
    __m512i v01 = _mm512_packs_epi32(Multiply<kSimple>(acc0), Multiply<kSimple>(acc1));
    __m512i v23 = _mm512_packs_epi32(Multiply<kSimple>(acc2), Multiply<kSimple>(acc3));
    v01 = _mm512_adds_epi16(v01, zero_point16);
    v23 = _mm512_adds_epi16(v23, zero_point16);
    v01 = _mm512_min_epi16(_mm512_max_epi16(v01, low16), high16);
    v23 = _mm512_min_epi16(_mm512_max_epi16(v23, low16), high16);
    // Per 128-bit lane k: dword p = pixel p's channels 4k..4k+3, wanted at
    // dword 4p + k.
    const __m512i order =
        _mm512_set_epi32(15, 11, 7, 3, 14, 10, 6, 2, 13, 9, 5, 1, 12, 8, 4, 0);
    return _mm512_permutexvar_epi32(order, _mm512_packs_epi16(v01, v23));
  }
};

inline std::int32_t Load32(const std::uint8_t* p) {
  std::int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// Pixels per step: independent vpdpbusd chains to hide its latency.
constexpr int kPixels = 8;

// Where the kernel reads a pixel's taps: kernel row kh's row_groups * 4
// bytes start at first + pixel * pixel_pitch + kh * kernel_row_pitch (the
// padded image itself, or the gathered patches where dilation_w > 1).
struct Taps {
  const std::uint8_t* first;
  std::int64_t pixel_pitch, kernel_row_pitch;
  int kernel_h, row_groups;
};

// N pixels' dot products with 16 output channels (one vpdpbusd per group of
// 4 bytes, broadcast straight from memory, against the channels' 4 weights
// each), then requantized and stored (`out` the first pixel's, `pitch` bytes
// apart). KH and RG > 0: the kernel's height and row groups known at compile
// time (fully unrolled, the accumulators stay in registers), else 0. Dense:
// 16 output channels, pitch 16, the pixels' bytes stored 64 at a time.
// kSimple: Requant's simple requantization (requant.simple).
template <int N, int KH, int RG, bool kDense, bool kSimple>
inline void DotAndStore(const Taps& taps, int pixel, const std::int8_t* weights, __m512i bias,
                        const Requant& requant, __mmask16 store_mask, std::int8_t* out,
                        int pitch) {
  const int kernel_h = KH > 0 ? KH : taps.kernel_h;
  const int row_groups = RG > 0 ? RG : taps.row_groups;
  __m512i acc[N];
  for (int j = 0; j < N; ++j) acc[j] = bias;
  const std::uint8_t* first = taps.first + pixel * taps.pixel_pitch;
  for (int kh = 0; kh < kernel_h; ++kh) {
    const std::uint8_t* row = first + kh * taps.kernel_row_pitch;
    for (int g = 0; g < row_groups; ++g) {
      const __m512i w = _mm512_loadu_si512(weights + (kh * row_groups + g) * 64);
      for (int j = 0; j < N; ++j) {
        acc[j] = _mm512_dpbusd_epi32(
            acc[j], _mm512_set1_epi32(Load32(row + j * taps.pixel_pitch + g * 4)), w);
      }
    }
  }
  if (kDense) {
    static_assert(!kDense || N % 4 == 0, "dense stores take 4 pixels");
    for (int j = 0; j < N; j += 4) {
      const __m512i bytes =
          requant.template Bytes4<kSimple>(acc[j], acc[j + 1], acc[j + 2], acc[j + 3]);
      _mm512_storeu_si512(out + j * 16, bytes);
    }
  } else {
    for (int j = 0; j < N; ++j) {
      _mm_mask_storeu_epi8(out + static_cast<std::int64_t>(j) * pitch, store_mask,
                           requant.template Bytes<kSimple>(acc[j]));
    }
  }
}

// One output row's pixels for one block of 16 channels (DotAndStore).
template <int KH, int RG, bool kSimple>
void BlockRow(const Taps& taps, int out_w, const std::int8_t* weights, __m512i bias,
              const Requant& requant, __mmask16 store_mask, std::int8_t* out, int pitch) {
  const bool dense = pitch == 16;  // then out_c is 16: one block, every lane
  int ow = 0;
  for (; ow + kPixels <= out_w; ow += kPixels) {
    std::int8_t* at = out + static_cast<std::int64_t>(ow) * pitch;
    if (dense) {
      DotAndStore<kPixels, KH, RG, true, kSimple>(taps, ow, weights, bias, requant, store_mask,
                                                  at, pitch);
    } else {
      DotAndStore<kPixels, KH, RG, false, kSimple>(taps, ow, weights, bias, requant, store_mask,
                                                   at, pitch);
    }
  }
  for (; ow < out_w; ++ow) {
    DotAndStore<1, KH, RG, false, kSimple>(taps, ow, weights, bias, requant, store_mask,
                           out + static_cast<std::int64_t>(ow) * pitch, pitch);
  }
}

// BlockRow for any kernel: 3 kernel rows of up to 16 bytes (3x3 over 1-5
// channels, 3x5 over 1-3) unrolled, anything else in loops.
template <bool kSimple>
void AnyBlockRow(const Taps& taps, int out_w, const std::int8_t* weights, __m512i bias,
                 const Requant& requant, __mmask16 store_mask, std::int8_t* out, int pitch) {
  switch (taps.kernel_h == 3 ? taps.row_groups : 0) {
    case 1:
      BlockRow<3, 1, kSimple>(taps, out_w, weights, bias, requant, store_mask, out, pitch);
      break;
    case 2:
      BlockRow<3, 2, kSimple>(taps, out_w, weights, bias, requant, store_mask, out, pitch);
      break;
    case 3:
      BlockRow<3, 3, kSimple>(taps, out_w, weights, bias, requant, store_mask, out, pitch);
      break;
    case 4:
      BlockRow<3, 4, kSimple>(taps, out_w, weights, bias, requant, store_mask, out, pitch);
      break;
    default:
      BlockRow<0, 0, kSimple>(taps, out_w, weights, bias, requant, store_mask, out, pitch);
  }
}

// Output rows [begin, end) (row = batch * out_h + oh) from the padded
// image. Everything it reads in its loops is a local (the params by value):
// its byte stores may alias any memory, so values behind a pointer or a
// reference would be reloaded after each.
void ConvRows(const Int8Conv2DPlan& plan, const Int8Conv2DParams p, const std::uint8_t* padded,
              std::int64_t image_bytes, std::int64_t row_bytes, std::int8_t* output,
              std::int64_t begin, std::int64_t end) {
  const int c = p.in_c;
  const int row_groups = plan.row_groups(), groups = plan.groups();
  const int blocks = plan.channel_blocks();
  const bool gather = p.dilation_w > 1;
  const int patch_bytes = groups * 4;
  std::uint8_t* patches =
      gather ? static_cast<std::uint8_t*>(
                   ScratchBytes(ScratchSlot::kInt8ConvPatches,
                                static_cast<std::int64_t>(p.out_w) * patch_bytes + kSlack))
             : nullptr;
  for (std::int64_t row = begin; row < end; ++row) {
    const int b = static_cast<int>(row / p.out_h), oh = static_cast<int>(row % p.out_h);
    const std::uint8_t* corner =
        padded + b * image_bytes + static_cast<std::int64_t>(oh) * p.stride_h * row_bytes;
    Taps taps{corner, static_cast<std::int64_t>(p.stride_w) * c,
              static_cast<std::int64_t>(p.dilation_h) * row_bytes, p.kernel_h, row_groups};
    if (gather) {
      // Each kernel row's taps (in_c bytes dilation_w * in_c apart in the
      // image) side by side at the start of its row_groups * 4 bytes; the
      // rest of those meets zero weights and holds whatever the copies left.
      for (int ow = 0; ow < p.out_w; ++ow) {
        std::uint8_t* patch = patches + static_cast<std::int64_t>(ow) * patch_bytes;
        const std::uint8_t* pixel = corner + static_cast<std::int64_t>(ow) * p.stride_w * c;
        for (int kh = 0; kh < p.kernel_h; ++kh) {
          const std::uint8_t* src = pixel + kh * taps.kernel_row_pitch;
          std::uint8_t* dst = patch + kh * row_groups * 4;
          for (int kw = 0; kw < p.kernel_w; ++kw) {
            CopyBytes(dst + kw * c, src + static_cast<std::int64_t>(kw) * p.dilation_w * c, c);
          }
        }
      }
      taps = Taps{patches, patch_bytes, row_groups * 4, p.kernel_h, row_groups};
    }
    std::int8_t* out = output + row * p.out_w * p.out_c;
    for (int block = 0; block < blocks; ++block) {
      const Requant requant(plan, block, p);
      const __m512i bias = _mm512_loadu_si512(plan.packed_bias() + block * 16);
      const std::int8_t* weights =
          plan.packed_filter() + static_cast<std::size_t>(block) * groups * 64;
      const int lanes = std::min(16, p.out_c - block * 16);
      const __mmask16 store_mask = static_cast<__mmask16>((1u << lanes) - 1);
      std::int8_t* out_block = out + block * 16;
      if (requant.simple) {
        AnyBlockRow<true>(taps, p.out_w, weights, bias, requant, store_mask, out_block, p.out_c);
      } else {
        AnyBlockRow<false>(taps, p.out_w, weights, bias, requant, store_mask, out_block,
                           p.out_c);
      }
    }
  }
}

}  // namespace

void Int8Conv2DAvx512Vnni(const Int8Conv2DPlan& plan, const Int8Conv2DParams& params,
                          const std::int8_t* input, std::int8_t* output,
                          ParallelExecutor& executor) {
  const Int8Conv2DParams& p = params;
  const int c = p.in_c;
  const Int8PaddedImage shape = ComputeInt8PaddedImage(p);  // of bytes
  const std::int64_t row_bytes = shape.row_values, image_bytes = shape.image_values;
  auto* padded = static_cast<std::uint8_t*>(
      ScratchBytes(ScratchSlot::kInt8ConvImage, image_bytes * p.batch + kSlack));
  const auto pad_value = static_cast<std::uint8_t>(p.input_zero_point + 128);
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
  const std::int64_t in_row_bytes = static_cast<std::int64_t>(p.in_w) * c;
  const std::int64_t left_bytes = static_cast<std::int64_t>(p.pad_left) * c;
  for (int b = 0; b < p.batch; ++b) {
    std::uint8_t* image = padded + b * image_bytes;
    // Padding rows above and below the image, then per image row its left
    // and right padding around the flipped input bytes.
    std::memset(image, pad_value, static_cast<std::size_t>(p.pad_top * row_bytes));
    const std::int64_t below = static_cast<std::int64_t>(p.pad_top + p.in_h) * row_bytes;
    std::memset(image + below, pad_value, static_cast<std::size_t>(image_bytes - below));
    for (int ih = 0; ih < p.in_h; ++ih) {
      const auto* src = reinterpret_cast<const std::uint8_t*>(input) +
                        (static_cast<std::int64_t>(b) * p.in_h + ih) * in_row_bytes;
      std::uint8_t* line = image + (ih + p.pad_top) * row_bytes;
      std::memset(line, pad_value, static_cast<std::size_t>(left_bytes));
      std::memset(line + left_bytes + in_row_bytes, pad_value,
                  static_cast<std::size_t>(row_bytes - left_bytes - in_row_bytes));
      std::uint8_t* dst = line + left_bytes;
      std::int64_t i = 0;
      for (; i + 64 <= in_row_bytes; i += 64) {
        _mm512_storeu_si512(dst + i, _mm512_xor_si512(_mm512_loadu_si512(src + i), flip));
      }
      if (i < in_row_bytes) {
        const __mmask64 mask = ByteMask(static_cast<int>(in_row_bytes - i));
        _mm512_mask_storeu_epi8(dst + i, mask,
                                _mm512_xor_si512(_mm512_maskz_loadu_epi8(mask, src + i), flip));
      }
    }
  }
  // The slack after the last image: read by CopyBytes and the in-place
  // dwords, met by zero weights (kSlack).
  std::memset(padded + p.batch * image_bytes, 0, kSlack);

  const std::int64_t out_rows = static_cast<std::int64_t>(p.batch) * p.out_h;
  executor.ParallelFor(
      out_rows, static_cast<std::int64_t>(p.out_w) * plan.groups() * plan.channel_blocks(),
      [&](std::int64_t begin, std::int64_t end) {
        ConvRows(plan, params, padded, image_bytes, row_bytes, output, begin, end);
      });
}

}  // namespace lowbit

#endif  // LOWBIT_INT8_CONV_VNNI
