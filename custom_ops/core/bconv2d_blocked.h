// Internal: the body of the blocked binary convolution, parameterised on the
// popcount implementation. Included by one translation unit per instruction
// set (bconv2d_portable.cc, bconv2d_x86_popcnt.cc), each compiled with its own
// flags; everything here has internal linkage so those copies never merge.
#ifndef LOWBIT_CORE_BCONV2D_BLOCKED_H_
#define LOWBIT_CORE_BCONV2D_BLOCKED_H_

#include <cstdint>
#include <cstring>
#include <vector>

#include "custom_ops/core/bconv2d.h"

namespace lowbit {
namespace {  // NOLINT: deliberate internal linkage in a header, see above.

// Popcount of (x XOR w) over one packed row of `words` words, the last of
// which is masked with `tail`. 64 bits at a time where possible.
template <typename Popcount>
inline std::int32_t XorPopcountRow(const PackedWord* x, const PackedWord* w,
                                   std::int64_t words, PackedWord tail) {
  std::int32_t acc = 0;
  std::int64_t j = 0;
  for (; j + 2 <= words - 1; j += 2) {
    std::uint64_t xa, wa;
    std::memcpy(&xa, x + j, sizeof(xa));
    std::memcpy(&wa, w + j, sizeof(wa));
    acc += Popcount::Pop64(xa ^ wa);
  }
  for (; j < words - 1; ++j) acc += Popcount::Pop32(x[j] ^ w[j]);
  acc += Popcount::Pop32((x[words - 1] ^ w[words - 1]) & tail);
  return acc;
}

// Parallel over output pixels. For each pixel the in-bounds taps (and, with
// pad_value 1, the padded taps, read from a row of zero bits = +1) are
// gathered once; then every output channel accumulates
//     acc = sum over used taps of popcount(x_tap XOR w_tap)
//     dot = K_used - 2 * acc,   K_used = channels_in * (number of used taps)
// With pad_value 0 the padded taps are simply not used: they contribute 0.
template <typename Popcount>
void BConv2DBlocked(const BConv2DParams& p, const PackedWord* input, const PackedWord* filter,
                    const float* multiplier, const float* bias,
                    const BConv2DEpilogue& epilogue, float* output,
                    ParallelExecutor& executor) {
  const std::int64_t words = p.words();
  const std::int64_t taps = p.kernel_h * p.kernel_w;
  const PackedWord tail = TailMask(p.channels_in);
  const std::vector<PackedWord> zero_row(words, 0);
  const std::int64_t pixels = p.batch * p.out_h * p.out_w;
  const std::int64_t cost = p.out_channels * taps * words;

  executor.ParallelFor(pixels, cost, [&](std::int64_t begin, std::int64_t end) {
    std::vector<const PackedWord*> rows(taps);
    std::vector<std::int64_t> filter_offsets(taps);
    for (std::int64_t pix = begin; pix < end; ++pix) {
      const std::int64_t ox = pix % p.out_w;
      const std::int64_t oy = (pix / p.out_w) % p.out_h;
      const std::int64_t n = pix / (p.out_w * p.out_h);
      std::int64_t used = 0;
      for (std::int64_t ky = 0; ky < p.kernel_h; ++ky) {
        const std::int64_t iy = oy * p.stride_h - p.pad_top + ky * p.dilation_h;
        for (std::int64_t kx = 0; kx < p.kernel_w; ++kx) {
          const std::int64_t ix = ox * p.stride_w - p.pad_left + kx * p.dilation_w;
          const bool inside = iy >= 0 && iy < p.in_h && ix >= 0 && ix < p.in_w;
          if (!inside && p.pad_value == 0) continue;
          rows[used] = inside ? input + ((n * p.in_h + iy) * p.in_w + ix) * words
                              : zero_row.data();
          filter_offsets[used] = (ky * p.kernel_w + kx) * words;
          ++used;
        }
      }
      const std::int32_t k_used = static_cast<std::int32_t>(used * p.channels_in);
      float* out = output + pix * p.out_channels;
      for (std::int64_t co = 0; co < p.out_channels; ++co) {
        const PackedWord* w = filter + co * taps * words;
        std::int32_t acc = 0;
        for (std::int64_t u = 0; u < used; ++u) {
          acc += XorPopcountRow<Popcount>(rows[u], w + filter_offsets[u], words, tail);
        }
        float y = static_cast<float>(k_used - 2 * acc) * multiplier[co] + bias[co];
        if (p.activation == Activation::kRelu && y < 0.0f) y = 0.0f;
        out[co] = epilogue.Apply(y, co, pix * p.out_channels + co);
      }
    }
  });
}

}  // namespace
}  // namespace lowbit

#endif  // LOWBIT_CORE_BCONV2D_BLOCKED_H_
