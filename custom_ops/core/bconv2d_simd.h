// Internal: the SIMD binary convolution, written once over a small "ISA"
// struct of vector operations and instantiated by one translation unit per
// instruction set (bconv2d_avx2.cc, bconv2d_avx512bw.cc, bconv2d_avx512.cc),
// each compiled with its own flags. Everything here has internal linkage so
// that those copies never merge (see also SimdConvArgs on buffers).
//
// Shape of the computation
// ------------------------
// For output pixel p and output channel c the kernel needs
//     acc[p][c] = sum over taps t, words j of popcount(x[p, t, j] XOR w[c, t, j])
//     dot[p][c] = K_used[p] - 2 * acc[p][c]
// (types.h: dot = K - 2 * popcount(pa XOR pb)). The channel dimension of the
// OUTPUT is vectorised: the filter is interleaved (BConv2DFilter) so that one
// vector load brings word j of tap t for L consecutive output channels (one
// 32-bit lane each); the input word x[p, t, j] is broadcast to all lanes. Then
// XOR + per-lane popcount + add accumulates L output channels at once, the
// accumulator lanes are already the outputs (no horizontal reduction) and the
// output transform is vectorised over the same lanes.
//
// Register tiling: a micro-kernel keeps a P x V tile of accumulators (P output
// pixels x V vectors of L channels). Per input word it does V filter loads and
// P broadcasts for 3 * P * V vector operations, so loads stay well below the
// vector ALU throughput; P * V is bounded by the register file (16 ymm / 32 zmm)
// minus the filter vectors and temporaries. Accumulator chains are only a
// 1-cycle add long, and P * V >= 8 independent ones hide the popcount latency.
//
// The input is read in place ("im2col-free"): a tile's pixels get a table of
// P row pointers per run of contiguous input words (an indirection table,
// rebuilt per tile, against P * taps * words * V vector steps). With
// dilation_w == 1 the kernel_w taps of a kernel row are contiguous, so a run
// is kernel_w * words words and a 3x3 kernel needs 3 pointers per pixel; with
// dilation_w > 1 a run is one tap. For SAME padding the dispatch point gives
// the kernel a copy of the input with a border of zero words (SimdConvArgs),
// so every run is in bounds and the micro-kernels have no border cases: any
// kernel size, stride, dilation and SAME/VALID geometry, no im2col copy.
//
// Padding. A zero word is 32 channels of +1, which is exactly pad_value 1:
// such a tap contributes popcount(w_tap) to acc and C to K. For pad_value 0 a
// padded tap must contribute nothing, so for a pixel with padded taps T0 the
// kernel subtracts the popcounts it added and counts only the valid taps:
//     acc_true[c] = acc[c] - sum over t in T0 of popcount(w[c, t])
//     K_used      = C * (taps - |T0|)
// with popcount(w[c, t]) precomputed per tap and channel (tap_popcounts).
// The padded taps of every pixel are listed once per tile; the correction is
// applied to the accumulators in the registers, one vector subtraction per
// padded tap, so pixels inside the input pay nothing and border pixels little
// (measured on 3x3 14x14x256, where nearly every 12-pixel tile touches the
// border: storing the tile's accumulators and correcting them in memory cost
// 15% of the convolution).
//
// Tails: the last word of a pixel is masked before the kernel runs (SimdConvArgs:
// the input's padding bits are zero, the filter's are zero by construction, so
// they XOR to 0); output channels past out_channels are zero filters in the
// layout and are neither loaded (masked multiplier/bias) nor stored (masked
// stores); a last tile of fewer than P pixels uses a smaller micro-kernel.
//
// Output transform: y = float(dot) * multiplier[c] + bias[c], then ReLU as
// max(0, y) with 0 as the FIRST operand: maxps returns its second operand when
// the comparison fails, so -0.0 and NaN pass through exactly as in the
// reference's `if (y < 0) y = 0`. Multiply and add are separate instructions
// (never fused: the core is built with -ffp-contract=off) so that the result
// is bit-identical to the scalar kernels.
#ifndef LOWBIT_CORE_BCONV2D_SIMD_H_
#define LOWBIT_CORE_BCONV2D_SIMD_H_

#include <cstdint>
#include <memory>

#include "custom_ops/core/bconv2d.h"
#include "custom_ops/core/bconv2d_kernels.h"

namespace lowbit {
namespace {  // NOLINT: deliberate internal linkage in a header, see above.

// The p and v loops of a micro-kernel must be fully unrolled so that the
// accumulator arrays live in registers (GCC otherwise keeps them in memory).
#if defined(__clang__)
#define LOWBIT_UNROLL _Pragma("unroll")
#elif defined(__GNUC__)
#define LOWBIT_UNROLL _Pragma("GCC unroll 16")
#else
#define LOWBIT_UNROLL
#endif

// Largest number of words whose per-byte popcounts (<= 8 each) can be summed
// in 8-bit lanes before they may overflow: 31 * 8 = 248 <= 255.
constexpr int kMaxByteSteps = 31;

// The popcount sums of a P x V tile (pixels x vectors of L channels).
// The receptive field of a pixel is `segments` runs of `words` contiguous
// input words; rows[s * P + p] is where run s of pixel p starts. w: the channel
// block's filter, the same runs back to back, BW = Isa::kBlockWidth lanes per
// word. (In XNNPACK-style naming this is bconv2d_<P>x<V*L>_<isa>.)
// The finished accumulators go to sink(p, v, acc[p][v]), straight from the
// registers.
template <class Isa, int P, int V, class Sink>
inline void AccumulateTile(const PackedWord* const* rows, std::int64_t segments,
                           std::int64_t words, const PackedWord* w, Sink&& sink) {
  using IVec = typename Isa::IVec;
  constexpr int L = Isa::kLanes;
  constexpr int BW = Isa::kBlockWidth;
  IVec acc[P][V];
  LOWBIT_UNROLL
  for (int p = 0; p < P; ++p) {
    LOWBIT_UNROLL
    for (int v = 0; v < V; ++v) acc[p][v] = Isa::Zero();
  }
  if constexpr (!Isa::kBytePopcount) {
    // One instruction popcounts each 32-bit lane: XOR, popcount, add.
    for (std::int64_t t = 0; t < segments; ++t, rows += P) {
      const PackedWord* x[P];
      LOWBIT_UNROLL
      for (int p = 0; p < P; ++p) x[p] = rows[p];
      for (std::int64_t j = 0; j < words; ++j, w += BW) {
        IVec wv[V];
        LOWBIT_UNROLL
        for (int v = 0; v < V; ++v) wv[v] = Isa::Load(w + v * L);
        LOWBIT_UNROLL
        for (int p = 0; p < P; ++p) {
          const IVec xb = Isa::Broadcast(x[p] + j);
          LOWBIT_UNROLL
          for (int v = 0; v < V; ++v) {
            acc[p][v] = Isa::Add32(acc[p][v], Isa::Popcount32(Isa::Xor(xb, wv[v])));
          }
        }
      }
    }
  } else {
    // Byte popcounts (nibble lookup) summed in 8-bit lanes for up to
    // kMaxByteSteps words, then folded into the 32-bit lanes: the four byte
    // counts of a lane belong to the same output channel.
    IVec acc8[P][V];
    LOWBIT_UNROLL
    for (int p = 0; p < P; ++p) {
      LOWBIT_UNROLL
      for (int v = 0; v < V; ++v) acc8[p][v] = Isa::Zero();
    }
    int pending = 0;
    for (std::int64_t t = 0; t < segments; ++t, rows += P) {
      const PackedWord* x[P];
      LOWBIT_UNROLL
      for (int p = 0; p < P; ++p) x[p] = rows[p];
      for (std::int64_t j = 0; j < words; ++j, w += BW) {
        IVec wv[V];
        LOWBIT_UNROLL
        for (int v = 0; v < V; ++v) wv[v] = Isa::Load(w + v * L);
        LOWBIT_UNROLL
        for (int p = 0; p < P; ++p) {
          const IVec xb = Isa::Broadcast(x[p] + j);
          LOWBIT_UNROLL
          for (int v = 0; v < V; ++v) {
            acc8[p][v] = Isa::Add8(acc8[p][v], Isa::PopcountBytes(Isa::Xor(xb, wv[v])));
          }
        }
        if (++pending == kMaxByteSteps) {
          LOWBIT_UNROLL
          for (int p = 0; p < P; ++p) {
            LOWBIT_UNROLL
            for (int v = 0; v < V; ++v) {
              acc[p][v] = Isa::Add32(acc[p][v], Isa::SumBytesPerLane(acc8[p][v]));
              acc8[p][v] = Isa::Zero();
            }
          }
          pending = 0;
        }
      }
    }
    LOWBIT_UNROLL
    for (int p = 0; p < P; ++p) {
      LOWBIT_UNROLL
      for (int v = 0; v < V; ++v) {
        acc[p][v] = Isa::Add32(acc[p][v], Isa::SumBytesPerLane(acc8[p][v]));
      }
    }
  }
  LOWBIT_UNROLL
  for (int p = 0; p < P; ++p) {
    LOWBIT_UNROLL
    for (int v = 0; v < V; ++v) sink(p, v, acc[p][v]);
  }
}

// The output transform of one vector of lanes (see the top of this file):
// dot = k - 2 * acc, y = float(dot) * m + b as a separate multiply and add,
// then ReLU as max(0, y). Shared with the GEMV path (bgemv_simd.h).
template <class Isa>
inline typename Isa::FVec TransformLanes(typename Isa::IVec acc, typename Isa::IVec k,
                                         typename Isa::FVec m, typename Isa::FVec b, bool relu) {
  const typename Isa::IVec dot = Isa::Sub32(k, Isa::Add32(acc, acc));
  typename Isa::FVec y = Isa::AddF(Isa::MulF(Isa::ToFloat(dot), m), b);
  return relu ? Isa::MaxF(Isa::ZeroF(), y) : y;
}

// Where the receptive field of one output pixel starts in input coordinates
// (may be negative in the SAME padding).
struct PixelOrigin {
  std::int64_t iy, ix;
};

// The indirection table of one tile: rows[s * tile + i] for run s of pixel
// first + i (i < count; entries past count repeat the last pixel, so that a
// full-size micro-kernel would stay in bounds), and the pixels' origins.
// With dilation_w == 1 the taps of a kernel row are contiguous in the
// (padded) input: one run of kernel_w * words words per kernel row.
inline void BuildTileRows(const BConv2DParams& p, const SimdConvArgs& a, std::int64_t first,
                          int count, int tile, bool row_runs, const PackedWord** rows,
                          PixelOrigin* origins) {
  const std::int64_t words = p.words();
  const std::int64_t segments = row_runs ? p.kernel_h : p.kernel_h * p.kernel_w;
  std::int64_t ox = first % p.out_w;
  std::int64_t oy = (first / p.out_w) % p.out_h;
  std::int64_t n = first / (p.out_w * p.out_h);
  for (int i = 0; i < count; ++i) {
    origins[i] = {oy * p.stride_h - p.pad_top, ox * p.stride_w - p.pad_left};
    const PackedWord* base =
        a.input + ((n * a.buf_h + oy * p.stride_h) * a.buf_w + ox * p.stride_w) * words;
    std::int64_t s = 0;
    for (std::int64_t ky = 0; ky < p.kernel_h; ++ky) {
      const PackedWord* row = base + ky * p.dilation_h * a.buf_w * words;
      if (row_runs) {
        rows[s++ * tile + i] = row;
      } else {
        for (std::int64_t kx = 0; kx < p.kernel_w; ++kx) {
          rows[s++ * tile + i] = row + kx * p.dilation_w * words;
        }
      }
    }
    if (++ox == p.out_w) {
      ox = 0;
      if (++oy == p.out_h) {
        oy = 0;
        ++n;
      }
    }
  }
  for (int i = count; i < tile; ++i) {
    origins[i] = origins[count - 1];
    for (std::int64_t s = 0; s < segments; ++s) rows[s * tile + i] = rows[s * tile + count - 1];
  }
}

template <class Isa>
void BConv2DSimd(const SimdConvArgs& a, ParallelExecutor& executor) {
  using IVec = typename Isa::IVec;
  using FVec = typename Isa::FVec;
  constexpr int P = Isa::kTilePixels;
  constexpr int V = Isa::kBlockVectors;
  constexpr int L = Isa::kLanes;
  constexpr int BW = Isa::kBlockWidth;
  static_assert(BW == V * L, "a channel block is V vectors");

  const BConv2DParams& p = *a.params;
  const std::int64_t words = p.words();
  const std::int64_t taps = p.kernel_h * p.kernel_w;
  const bool row_runs = p.dilation_w == 1;
  const std::int64_t segments = row_runs ? p.kernel_h : taps;
  const std::int64_t run_words = row_runs ? p.kernel_w * words : words;
  const std::int64_t cout = p.out_channels;
  const std::int64_t pixels = p.batch * p.out_h * p.out_w;
  const std::int64_t tiles = (pixels + P - 1) / P;
  const std::int64_t blocks = (cout + BW - 1) / BW;
  const std::int32_t channels = static_cast<std::int32_t>(p.channels_in);
  const bool relu = p.activation == Activation::kRelu;
  const bool correct_padding = p.pad_value == 0 && p.padding == Padding::kSame;
  // Input rows / columns a receptive field spans.
  const std::int64_t extent_h = (p.kernel_h - 1) * p.dilation_h + 1;
  const std::int64_t extent_w = (p.kernel_w - 1) * p.dilation_w + 1;
  const bool post_affine = a.epilogue.post_multiplier != nullptr;
  const float* const residual = a.epilogue.residual;
  // Work items are (tile, block) pairs, tile-major: a thread's contiguous
  // range builds a tile's indirection table once and sweeps the blocks.
  const std::int64_t cost = P * taps * words * V * 3;

  executor.ParallelFor(tiles * blocks, cost, [&](std::int64_t begin, std::int64_t end) {
    // Per range scratch (new[] rather than a container: see SimdConvArgs).
    std::unique_ptr<const PackedWord*[]> rows(new const PackedWord*[segments * P]);
    std::unique_ptr<const PackedWord*[]> small_rows(new const PackedWord*[segments * P]);
    // pad_value 0: the padded taps of each pixel of the tile (padded[i * taps
    // + j], j < padded_count[i]), so that the sink corrects a pixel's
    // accumulators in the registers (see the top of this file).
    std::unique_ptr<std::int64_t[]> padded(new std::int64_t[correct_padding ? P * taps : 1]);
    int padded_count[P] = {};
    PixelOrigin origins[P];
    std::int64_t built_tile = -1;
    int count = 0;
    for (std::int64_t item = begin; item < end; ++item) {
      const std::int64_t tile = item / blocks;
      const std::int64_t block = item % blocks;
      if (tile != built_tile) {
        const std::int64_t first = tile * P;
        count = static_cast<int>(pixels - first < P ? pixels - first : P);
        BuildTileRows(p, a, first, count, P, row_runs, rows.get(), origins);
        built_tile = tile;
        for (int i = 0; i < count && correct_padding; ++i) {
          const PixelOrigin& o = origins[i];
          padded_count[i] = 0;
          // Most pixels of a large input see no padding: one test, no tap loop.
          if (o.iy >= 0 && o.iy + extent_h <= p.in_h && o.ix >= 0 && o.ix + extent_w <= p.in_w) {
            continue;
          }
          std::int64_t* list = padded.get() + i * taps;
          int n = 0;
          for (std::int64_t ky = 0; ky < p.kernel_h; ++ky) {
            const std::int64_t iy = o.iy + ky * p.dilation_h;
            const bool row_inside = iy >= 0 && iy < p.in_h;
            for (std::int64_t kx = 0; kx < p.kernel_w; ++kx) {
              const std::int64_t ix = o.ix + kx * p.dilation_w;
              if (!row_inside || ix < 0 || ix >= p.in_w) list[n++] = ky * p.kernel_w + kx;
            }
          }
          padded_count[i] = n;
        }
      }
      const std::int64_t c0 = block * BW;
      const int block_channels = static_cast<int>(cout - c0 < BW ? cout - c0 : BW);
      const int vectors = (block_channels + L - 1) / L;
      const PackedWord* w = a.filter + block * taps * words * BW;

      FVec mult[V], bias[V], post_mult[V], post_bias[V];
      for (int v = 0; v < V; ++v) mult[v] = bias[v] = post_mult[v] = post_bias[v] = Isa::ZeroF();
      for (int v = 0; v < vectors; ++v) {
        const int n = block_channels - v * L;
        mult[v] = Isa::LoadF(a.multiplier + c0 + v * L, n);
        bias[v] = Isa::LoadF(a.bias + c0 + v * L, n);
        if (post_affine) {
          post_mult[v] = Isa::LoadF(a.epilogue.post_multiplier + c0 + v * L, n);
          post_bias[v] = Isa::LoadF(a.epilogue.post_bias + c0 + v * L, n);
        }
      }
      const std::int64_t tile_offset = tile * P * cout + c0;
      float* out_tile = a.output + tile_offset;
      // Output transform of one vector of lanes, vectorised over channels,
      // then the epilogue (BConv2DEpilogue::Apply, the same roundings).
      auto transform = [&](int i, int v, IVec acc_v, std::int64_t used_taps) {
        const IVec k_used = Isa::Set32(channels * static_cast<std::int32_t>(used_taps));
        FVec y = TransformLanes<Isa>(acc_v, k_used, mult[v], bias[v], relu);
        const int n = block_channels - v * L;
        const std::int64_t offset = i * cout + v * L;
        if (post_affine) y = Isa::AddF(Isa::MulF(y, post_mult[v]), post_bias[v]);
        if (residual != nullptr) y = Isa::AddF(y, Isa::LoadF(residual + tile_offset + offset, n));
        Isa::StoreF(out_tile + offset, y, n);
      };
      // pad_value 0: a pixel with padded taps takes back what their zero
      // words added, popcount(w[c, t]) per padded tap t, and counts only its
      // taps inside the input (see the top of this file).
      const std::int32_t* tap_pop = a.tap_popcounts + block * taps * BW;
      int first_pixel = 0;  // of the micro-kernel call, within the tile
      auto sink = [&](int i, int v, IVec acc_v) {
        i += first_pixel;
        if (i >= count) return;
        const int n = padded_count[i];
        const std::int64_t* list = padded.get() + i * taps;
        for (int j = 0; j < n; ++j) acc_v = Isa::Sub32(acc_v, Isa::Load(tap_pop + list[j] * BW + v * L));
        transform(i, v, acc_v, taps - n);
      };
      if (count == P) {
        if (vectors == V) {
          AccumulateTile<Isa, P, V>(rows.get(), segments, run_words, w, sink);
        } else {
          AccumulateTile<Isa, P, 1>(rows.get(), segments, run_words, w, sink);
        }
      } else {
        // Last, partial tile: runs of 4, 2 and 1 pixels, each through the
        // table re-strided to its length.
        while (first_pixel < count) {
          const int left = count - first_pixel;
          const int run = left >= 4 ? 4 : left >= 2 ? 2 : 1;
          for (std::int64_t s = 0; s < segments; ++s) {
            for (int i = 0; i < run; ++i) small_rows[s * run + i] = rows[s * P + first_pixel + i];
          }
          const PackedWord* const* r = small_rows.get();
          if (run == 4) {
            if (vectors == V) {
              AccumulateTile<Isa, 4, V>(r, segments, run_words, w, sink);
            } else {
              AccumulateTile<Isa, 4, 1>(r, segments, run_words, w, sink);
            }
          } else if (run == 2) {
            if (vectors == V) {
              AccumulateTile<Isa, 2, V>(r, segments, run_words, w, sink);
            } else {
              AccumulateTile<Isa, 2, 1>(r, segments, run_words, w, sink);
            }
          } else {
            if (vectors == V) {
              AccumulateTile<Isa, 1, V>(r, segments, run_words, w, sink);
            } else {
              AccumulateTile<Isa, 1, 1>(r, segments, run_words, w, sink);
            }
          }
          first_pixel += run;
        }
      }
    }
  });
}

}  // namespace
}  // namespace lowbit

#undef LOWBIT_UNROLL

#endif  // LOWBIT_CORE_BCONV2D_SIMD_H_
