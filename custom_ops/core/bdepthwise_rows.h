// Internal: the body of the binary depthwise convolution (core/bdepthwise.h),
// written once over a "Counter" policy that reads the bit-sliced counts out
// and instantiated by one translation unit per instruction set
// (bdepthwise.cc: portable, bdepthwise_avx2.cc: AVX2, bdepthwise_neon.cc:
// NEON), each compiled with its own flags. Everything here has internal
// linkage so those copies never merge, and it uses no standard-library
// containers (the dispatch point owns the buffers, see bconv2d_kernels.h on
// why).
//
// Bit-sliced counting. 64 output channels of a pixel form one Lanes word (two
// packed words, channel o of the pair in bit o). A tap's mismatch bits
// v = x XOR w are added into P counter planes: plane p holds bit p of the 64
// per-channel counts, and adding v is a ripple-carry add of a 1-bit number in
// every lane at once:
//     carry = v;  for p: (plane[p], carry) = (plane[p] XOR carry, plane[p] AND carry)
// P planes hold counts up to 2^P - 1, so taps are counted in blocks of that
// many; after each block Counter::Add adds the 64 counts to int32 counters
// (or, after the first, writes them).
// With M mismatches over the K taps used, D = K - 2 * M.
#ifndef LOWBIT_CORE_BDEPTHWISE_ROWS_H_
#define LOWBIT_CORE_BDEPTHWISE_ROWS_H_

#include <cstdint>
#include <cstring>
#include <memory>
#include <type_traits>

#include "custom_ops/core/bdepthwise_kernels.h"

namespace lowbit {
namespace {  // NOLINT: deliberate internal linkage in a header, see above.

// The byte tricks (Counter::Add, BitpackedSink) read words as bytes.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "little-endian byte order assumed");

using Lanes = std::uint64_t;
constexpr int kLanes = 64;
constexpr int kMaxPlanes = 6;  // blocks of up to 63 taps

template <int P>
inline void AddToCounters(Lanes v, Lanes* planes) {
  for (int p = 0; p < P; ++p) {
    const Lanes carry = planes[p] & v;
    planes[p] ^= v;
    v = carry;
  }
}

// Words [0, 2) of `words` as one Lanes word, or only word 0 without kTwo
// (the last, odd word of a pixel: the next one belongs to another pixel or
// lies past the end).
template <bool kTwo>
inline Lanes LoadLanes(const PackedWord* words) {
  if (!kTwo) return words[0];
  Lanes lanes;
  std::memcpy(&lanes, words, sizeof(lanes));
  return lanes;
}

// Writes the float output of up to 64 channels from their mismatch counts.
struct FloatSink {
  const float* multiplier;
  const float* bias;
  float* output;
  std::int64_t out_channels;
  bool relu;

  void operator()(std::int64_t pixel, std::int64_t chunk, std::int32_t taps,
                  const std::int32_t* counts) const {
    const std::int64_t o0 = chunk * kLanes;
    const std::int64_t n = out_channels - o0 < kLanes ? out_channels - o0 : kLanes;
    const float* m = multiplier + o0;
    const float* b = bias + o0;
    float* out = output + pixel * out_channels + o0;
    for (std::int64_t c = 0; c < n; ++c) {
      // D = taps - 2 * mismatches; the transform exactly as LowbitBconv2d's.
      float y = static_cast<float>(taps - 2 * counts[c]) * m[c] + b[c];
      if (relu && y < 0.0f) y = 0.0f;
      out[c] = y;
    }
  }
};

// Writes the packed signs of up to 64 channels: bit o = (D_o < threshold) XOR flip.
struct BitpackedSink {
  const std::int32_t* threshold;
  const Lanes* flip_bits;
  PackedWord* output;
  std::int64_t out_channels, out_words;

  void operator()(std::int64_t pixel, std::int64_t chunk, std::int32_t taps,
                  const std::int32_t* counts) const {
    const std::int64_t o0 = chunk * kLanes;
    const std::int64_t n = out_channels - o0 < kLanes ? out_channels - o0 : kLanes;
    // One flag byte per channel (a vectorizable loop), then 8 flags at a time
    // to 8 bits: with flag j in byte j of f, the product f * kGather has
    // flag j at bit 56 + j, the partial products 2^(8j + 56 - 7i) all being
    // distinct powers of two (no carries), so the top byte is the 8 bits.
    std::uint8_t flags[kLanes] = {};
    for (std::int64_t c = 0; c < n; ++c) {
      flags[c] = static_cast<std::uint8_t>(taps - 2 * counts[c] < threshold[o0 + c]);
    }
    constexpr Lanes kGather = 0x0102040810204080ull;
    Lanes bits = 0;
    for (int k = 0; k < kLanes / 8; ++k) {
      Lanes f;
      std::memcpy(&f, flags + 8 * k, sizeof(f));
      bits |= ((f * kGather) >> 56) << (8 * k);
    }
    Store(pixel, chunk, bits ^ flip_bits[chunk]);
  }

  // The two output words of a chunk (one for the last, odd word).
  void Store(std::int64_t pixel, std::int64_t chunk, Lanes bits) const {
    PackedWord* out = output + pixel * out_words + 2 * chunk;
    out[0] = static_cast<PackedWord>(bits);
    if (2 * chunk + 1 < out_words) out[1] = static_cast<PackedWord>(bits >> 32);
  }
};

// The planes of taps [t0, t1) (at most 2^P - 1 of them) for the 64 channels
// of words [w, w + 2) (only w without kTwo), in Lanes words, then
// Counter::Add<P, kAccumulate> writes (kAccumulate false) or adds the counts
// they hold.
struct ScalarTapLoop {
  template <int P, bool kTwo, bool kAccumulate, typename Counter>
  static void Block(const PackedWord* const* in_taps, const PackedWord* const* filter_taps,
                    std::int64_t t0, std::int64_t t1, std::int64_t w, std::int32_t* counts) {
    Lanes planes[P] = {};
    for (std::int64_t t = t0; t < t1; ++t) {
      AddToCounters<P>(LoadLanes<kTwo>(in_taps[t] + w) ^ LoadLanes<kTwo>(filter_taps[t] + w),
                       planes);
    }
    Counter::template Add<P, kAccumulate>(planes, counts);
  }
};

// A Counter may bring its own tap loop (Counter::TapLoop, with ScalarTapLoop's
// Block, e.g. to keep the planes in vector registers); else ScalarTapLoop.
template <typename Counter, typename = void>
struct TapLoopOf {
  using type = ScalarTapLoop;
};
template <typename Counter>
struct TapLoopOf<Counter, std::void_t<typename Counter::TapLoop>> {
  using type = typename Counter::TapLoop;
};

// The mismatch counts of the `used` taps for the 64 channels of words
// [w, w + 2) (only w without kTwo), in blocks of 2^P - 1 taps: the first
// block's counts are written, the later ones' added.
template <int P, bool kTwo, typename Counter>
void CountTaps(const PackedWord* const* in_taps, const PackedWord* const* filter_taps,
               std::int64_t used, std::int64_t w, std::int32_t* counts) {
  using Loop = typename TapLoopOf<Counter>::type;
  constexpr std::int64_t kBlock = (std::int64_t{1} << P) - 1;
  if (used == 0) {  // pad_value 0 and a dilated window with no tap inside
    for (int c = 0; c < kLanes; ++c) counts[c] = 0;
    return;
  }
  for (std::int64_t t0 = 0; t0 < used; t0 += kBlock) {
    const std::int64_t t1 = used - t0 < kBlock ? used : t0 + kBlock;
    if (t0 == 0) {
      Loop::template Block<P, kTwo, false, Counter>(in_taps, filter_taps, t0, t1, w, counts);
    } else {
      Loop::template Block<P, kTwo, true, Counter>(in_taps, filter_taps, t0, t1, w, counts);
    }
  }
}

// Parallel over output rows. For each output pixel the taps it uses are
// gathered once (the in-bounds ones, and for pad_value 1 the padded ones,
// which read a pixel of zero words = +1), then every 64 output channels are
// counted and written by the sink.
template <int P, typename Counter, typename Sink>
void RunRows(const DepthwiseRowsArgs& a, const Sink& sink, ParallelExecutor& executor) {
  const BDepthwiseConv2DParams& p = *a.params;
  const std::int64_t words = p.out_words();
  const std::int64_t chunks = (words + 1) / 2;
  const std::int64_t taps = p.kernel_h * p.kernel_w;
  const std::int64_t window_h = (p.kernel_h - 1) * p.dilation_h + 1;
  const std::int64_t window_w = (p.kernel_w - 1) * p.dilation_w + 1;
  executor.ParallelFor(p.batch * p.out_h, p.out_w * taps * words * (2 * P + 4),
                       [&](std::int64_t begin, std::int64_t end) {
    std::unique_ptr<const PackedWord*[]> in_taps(new const PackedWord*[taps]);
    std::unique_ptr<const PackedWord*[]> border_filter_taps(new const PackedWord*[taps]);
    for (std::int64_t row = begin; row < end; ++row) {
      const std::int64_t n = row / p.out_h, oy = row % p.out_h;
      const std::int64_t y0 = oy * p.stride_h - p.pad_top;
      const bool inner_row = y0 >= 0 && y0 + window_h <= p.in_h;
      for (std::int64_t ox = 0; ox < p.out_w; ++ox) {
        const std::int64_t x0 = ox * p.stride_w - p.pad_left;
        std::int64_t used = 0;
        const PackedWord* const* filter_taps = a.filter_taps;
        if (inner_row && x0 >= 0 && x0 + window_w <= p.in_w) {
          const PackedWord* window = a.input + ((n * p.in_h + y0) * p.in_w + x0) * words;
          for (; used < taps; ++used) in_taps[used] = window + a.window_offsets[used];
        } else {
          filter_taps = border_filter_taps.get();
          for (std::int64_t ky = 0; ky < p.kernel_h; ++ky) {
            const std::int64_t iy = y0 + ky * p.dilation_h;
            for (std::int64_t kx = 0; kx < p.kernel_w; ++kx) {
              const std::int64_t ix = x0 + kx * p.dilation_w;
              const bool inside = iy >= 0 && iy < p.in_h && ix >= 0 && ix < p.in_w;
              if (!inside && p.pad_value == 0) continue;
              in_taps[used] = inside ? a.input + ((n * p.in_h + iy) * p.in_w + ix) * words
                                     : a.zero_pixel;
              border_filter_taps[used] = a.filter_taps[ky * p.kernel_w + kx];
              ++used;
            }
          }
        }
        const std::int64_t pixel = row * p.out_w + ox;
        for (std::int64_t chunk = 0; chunk < chunks; ++chunk) {
          alignas(32) std::int32_t counts[kLanes];
          if (2 * chunk + 1 < words) {
            CountTaps<P, true, Counter>(in_taps.get(), filter_taps, used, 2 * chunk, counts);
          } else {
            CountTaps<P, false, Counter>(in_taps.get(), filter_taps, used, 2 * chunk, counts);
          }
          // used <= kernel_h * kernel_w <= 2^24 (CheckBConv2DOptions).
          sink(pixel, chunk, static_cast<std::int32_t>(used), counts);
        }
      }
    }
  });
}

template <typename Counter, typename Sink>
void RunWithPlanes(const DepthwiseRowsArgs& a, const Sink& sink, ParallelExecutor& executor) {
  // Enough planes for every tap at once, up to kMaxPlanes (then blocks).
  const std::int64_t taps = a.params->kernel_h * a.params->kernel_w;
  int planes = 1;
  while (planes < kMaxPlanes && (std::int64_t{1} << planes) - 1 < taps) ++planes;
  switch (planes) {
    case 1:
      return RunRows<1, Counter>(a, sink, executor);
    case 2:
      return RunRows<2, Counter>(a, sink, executor);
    case 3:
      return RunRows<3, Counter>(a, sink, executor);
    case 4:
      return RunRows<4, Counter>(a, sink, executor);
    case 5:
      return RunRows<5, Counter>(a, sink, executor);
    default:
      return RunRows<kMaxPlanes, Counter>(a, sink, executor);
  }
}

// The whole convolution with one Counter: float or bit-packed output (the
// latter written by BitSink, a BitpackedSink or one built on it).
template <typename Counter, typename BitSink = BitpackedSink>
void RunDepthwiseRows(const DepthwiseRowsArgs& a, ParallelExecutor& executor) {
  const BDepthwiseConv2DParams& p = *a.params;
  if (a.output_bits != nullptr) {
    const BitpackedSink base{a.threshold, a.flip_bits, a.output_bits, p.out_channels(),
                             p.out_words()};
    const BitSink sink{base};
    RunWithPlanes<Counter>(a, sink, executor);
  } else {
    const FloatSink sink{a.multiplier, a.bias, a.output, p.out_channels(),
                         p.activation == Activation::kRelu};
    RunWithPlanes<Counter>(a, sink, executor);
  }
}

}  // namespace
}  // namespace lowbit

#endif  // LOWBIT_CORE_BDEPTHWISE_ROWS_H_
