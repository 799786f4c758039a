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
// The input is read in place ("im2col-free"): the receptive field of a pixel
// is a few runs of contiguous input words. With dilation_w == 1 the kernel_w
// taps of a kernel row are contiguous, so a run is kernel_w * words words and
// a 3x3 kernel has 3 runs per pixel; with dilation_w > 1 a run is one tap. All
// pixels of a region (below) read the same taps, so their run s starts the
// same number of words, run_starts[s], after their first run: a tile's
// indirection table is one pointer per pixel (where its first run starts,
// rebuilt per tile) plus the region's run_starts. The micro-kernel keeps the
// P pointers in registers across all runs and reads word j of run s at
// x[p] + run_starts[s] + j, one base + index operand per broadcast. A table
// of P pointers per run, reloaded at every run and rebuilt per tile with
// P * runs entries, cost more where the runs are short: measured on AVX-512
// VPOPCNTDQ, 1 thread, against that table in the same process, the 3x3
// 56x56x64 -> 64 conv runs 2-4% faster (median time ratio over 21 rounds;
// share of the peak 77.5% -> 79.3%, median of 11 rounds) and its hot loop
// takes 81% of the kernel's samples instead of 77.5% (with the pixel[] change
// of BConv2DSimd); 28x28x128 3x3 +0.5-5%.
// The price: GCC keeps 9 of the 12 AVX-512 pointers in registers and reloads
// 3 per word from the stack: 1-2.5% (0.7-0.8 points of the share) on 1x1
// convs of 256-512 channels (runs of 8-16 words, where the table cost
// nothing), none on 28x28x128 1x1. Per-run pointers (x[p] + run_starts[s]
// before the word loop) made GCC move 2 pointers through xmm registers in the
// loop (no better on either), and a separate copy of the loop for a single
// run (1x1) reloaded 10 pointers per word. Only taps inside the input are read, so
// the micro-kernels have no border cases: any kernel size, stride, dilation
// and SAME/VALID geometry, no im2col copy and no padded copy of the input.
//
// Padding: padded taps are skipped, not computed. Along each axis the output
// positions fall into bands whose receptive fields cover the same range of
// taps inside the input (3x3 SAME stride 1: the first row, the inside, the
// last row; likewise for columns), so the output splits into regions (band of
// rows x band of columns, <= 9 for 3x3) whose pixels all read the same
// rectangle of taps [ky0, ky1] x [kx0, kx1]. Tiles are cut per region (pixels
// of a tile come from one region, in row-major order within it), and a tile
// runs over only its region's taps. What a skipped tap t would have added:
//   pad_value 0: nothing: the pixel is 0, and K counts only the used taps:
//       K_used = C * |used taps|
//   pad_value 1: a +1 pixel (all-zero bits) XORs to w[c, t], so acc gains
//       popcount(w[c, t]) (precomputed per tap and channel: tap_popcounts),
//       added once per tile and block in the registers, and K_used = C * taps.
// Skipping is also work saved: 9% of the MACs of 3x3 14x14 SAME, 18% of 7x7
// (which the MAC counts of the benchmarks still include).
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
//
// Epilogue and int8 I/O: the post affine and residual steps of
// BConv2DEpilogue follow (on the accumulators of a tile, stored to an L1
// buffer by the micro-kernel: see `finish`), an int8 residual read as codes
// (sign-extended, minus the zero point, converted, times the scale: the
// floats of BConv2DEpilogue::ResidualInt8). An int8 output (mixed int8 +
// binary models, core/int8_io.h) is quantized there too (QuantizeLanes:
// multiply by the reciprocal scale, round, add the zero point) and its codes
// stored with a saturating narrowing store, masked for a channel tail, so
// the float output never exists: no float scratch and no second pass over
// the output, which on QuickNet's int8 model cost 8% of the inference as a
// separate quantize pass (with a division) and a dequantize pass of the
// residual.
//
// Bit-packed output (core/bconv2d_bitpacked.h): bit c = (dot < t_c) XOR f_c
// compared on the tile's dot products (a full tile straight from the
// registers, dot = 2a; otherwise from tile_acc) and a block's BW bits stored
// as bytes of the pixel's packed row, so neither the float output nor a
// scratch of dot products exists and no second pass packs them. Measured on
// AVX-512, 1 thread, 56x56x64 to 14x14x256: the packed output costs 1.00-1.04x
// the float output on 3x3 convs and 1.07x on 1x1 (the two-step path: 1.06-1.21x
// and 1.4-1.75x).
#ifndef LOWBIT_CORE_BCONV2D_SIMD_H_
#define LOWBIT_CORE_BCONV2D_SIMD_H_

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <type_traits>

#include "custom_ops/core/bconv2d.h"
#include "custom_ops/core/bconv2d_kernels.h"
#include "custom_ops/core/int8_io.h"

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
// The output lambdas (a sink, whose arguments are the micro-kernel's
// accumulators, and the epilogue) must be inlined where they are called: GCC
// left them out of line otherwise (seen with AVX-512 BW).
#if defined(__GNUC__) || defined(__clang__)
#define LOWBIT_INLINE __attribute__((always_inline))
#else
#define LOWBIT_INLINE
#endif

// Largest number of words whose per-byte popcounts (<= 8 each) can be summed
// in 8-bit lanes before they may overflow: 31 * 8 = 248 <= 255.
constexpr int kMaxByteSteps = 31;

// The popcount sums of a P x V tile (pixels x vectors of L channels).
// The receptive field of a pixel is `segments` runs of `words` contiguous
// input words; run s of pixel p starts at pixels[p] + run_starts[s]. The channel
// block's filter words of run s start at filter + filter_offsets[s], BW =
// Isa::kBlockWidth lanes per word. (In XNNPACK-style naming this is
// bconv2d_<P>x<V*L>_<isa>.)
// The finished accumulators go to sink(p, v, acc[p][v]), straight from the
// registers. With kDown the accumulators start at `start` and the popcounts
// are subtracted: acc = start - sum (the same cost as adding, and it lets the
// output transform start from k / 2 - sum, see BConv2DSimd); else they start
// at 0 and acc = sum.
template <class Isa, int P, int V, bool kDown = false, class Sink>
inline void AccumulateTile(const PackedWord* const* pixels, const std::int64_t* run_starts,
                           std::int64_t segments, std::int64_t words, const PackedWord* filter,
                           const std::int64_t* filter_offsets, Sink&& sink,
                           typename Isa::IVec start = Isa::Zero()) {
  using IVec = typename Isa::IVec;
  constexpr int L = Isa::kLanes;
  constexpr int BW = Isa::kBlockWidth;
  auto accumulate = [](IVec acc, IVec counts) {
    return kDown ? Isa::Sub32(acc, counts) : Isa::Add32(acc, counts);
  };
  IVec acc[P][V];
  LOWBIT_UNROLL
  for (int p = 0; p < P; ++p) {
    LOWBIT_UNROLL
    for (int v = 0; v < V; ++v) acc[p][v] = start;
  }
  const PackedWord* x[P];
  LOWBIT_UNROLL
  for (int p = 0; p < P; ++p) x[p] = pixels[p];
  if constexpr (!Isa::kBytePopcount) {
    // One instruction popcounts each 32-bit lane: XOR, popcount, add.
    for (std::int64_t t = 0; t < segments; ++t) {
      const PackedWord* w = filter + filter_offsets[t];
      const std::int64_t j0 = run_starts[t];
      for (std::int64_t j = j0; j < j0 + words; ++j, w += BW) {
        IVec wv[V];
        LOWBIT_UNROLL
        for (int v = 0; v < V; ++v) wv[v] = Isa::Load(w + v * L);
        LOWBIT_UNROLL
        for (int p = 0; p < P; ++p) {
          const IVec xb = Isa::Broadcast(x[p] + j);
          LOWBIT_UNROLL
          for (int v = 0; v < V; ++v) {
            acc[p][v] = accumulate(acc[p][v], Isa::Popcount32(Isa::Xor(xb, wv[v])));
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
    for (std::int64_t t = 0; t < segments; ++t) {
      const PackedWord* w = filter + filter_offsets[t];
      const std::int64_t j0 = run_starts[t];
      for (std::int64_t j = j0; j < j0 + words; ++j, w += BW) {
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
              acc[p][v] = accumulate(acc[p][v], Isa::SumBytesPerLane(acc8[p][v]));
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
        acc[p][v] = accumulate(acc[p][v], Isa::SumBytesPerLane(acc8[p][v]));
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
// then the ReLU without a branch, as max(floor, y) with floor = 0 (ReLU) or
// -infinity (none). max(-inf, y) is y for every y: maxps returns its second
// operand unless the first is greater, and -inf is greater than no value, NaN
// and -0.0 included; max(0, y) is the reference's `if (y < 0) y = 0`. For the
// convolution's output loop and the GEMV path (bgemv_simd.h), where a
// per-vector branch and its bookkeeping cost as much as the transform itself.
template <class Isa>
inline typename Isa::FVec TransformLanesFloor(typename Isa::IVec acc, typename Isa::IVec k,
                                              typename Isa::FVec m, typename Isa::FVec b,
                                              typename Isa::FVec floor) {
  const typename Isa::IVec dot = Isa::Sub32(k, Isa::Add32(acc, acc));
  return Isa::MaxF(floor, Isa::AddF(Isa::MulF(Isa::ToFloat(dot), m), b));
}

// QuantizeInt8Scaled (core/int8_io.h) of the lanes of y * inverse_scale, the
// same steps in the same float32 arithmetic: NaN -> 0, the clamp to
// [-256, 256], round half away from zero as trunc(c + copysign(kHalfBelow,
// c)) (the proof is there), plus the zero point, at least `lowest`. The
// codes come out as int32 lanes in [lowest, 383]; Isa::StoreInt8 saturates
// them to 127, the rest of the clamp.
template <class Isa>
inline typename Isa::IVec QuantizeLanes(typename Isa::FVec y, typename Isa::FVec inverse_scale,
                                        typename Isa::IVec zero_point,
                                        typename Isa::IVec lowest) {
  typename Isa::FVec c = Isa::ZeroNaN(Isa::MulF(y, inverse_scale));
  c = Isa::MinF(Isa::MaxF(c, Isa::SetF(-256.0f)), Isa::SetF(256.0f));
  c = Isa::AddF(c, Isa::CopySignF(Isa::SetF(kHalfBelow), c));
  return Isa::Max32(Isa::Add32(Isa::TruncToInt(c), zero_point), lowest);
}

// Taps inside the input. Along one axis, output position o reads input
// o * stride - pad + k * dilation for taps k = 0 .. kernel - 1, which is inside
// [0, in) for a contiguous range of k; a band is a run of output positions
// with the same range [k0, k1] (k0 > k1: none inside).
struct TapBand {
  std::int64_t first, count;  // output positions [first, first + count)
  std::int64_t k0, k1;        // taps inside the input
};

// The bands of one axis, in output order, into `bands` (room for `out`).
inline int AxisBands(std::int64_t out, std::int64_t in, std::int64_t kernel, std::int64_t stride,
                     std::int64_t dilation, std::int64_t pad, TapBand* bands) {
  int n = 0;
  for (std::int64_t o = 0; o < out; ++o) {
    const std::int64_t origin = o * stride - pad;
    std::int64_t k0 = 0, k1 = kernel - 1;
    while (k0 < kernel && origin + k0 * dilation < 0) ++k0;
    while (k1 >= 0 && origin + k1 * dilation >= in) --k1;
    if (n > 0 && bands[n - 1].k0 == k0 && bands[n - 1].k1 == k1) {
      ++bands[n - 1].count;
    } else {
      bands[n++] = {o, 1, k0, k1};
    }
  }
  return n;
}

// The pixels of one region: batch x the output rows of band h x the columns of
// band w, row-major, all with the same taps inside the input (ky in
// [h.k0, h.k1], kx in [w.k0, w.k1]). Its tiles are [first_tile, end_tile) in
// the convolution's tile order.
struct ConvRegion {
  TapBand h, w;
  std::int64_t pixels, first_tile, end_tile;
};

// The output's regions, band of rows x band of columns (at most 2 * kernel + 1
// bands per axis: the padded borders and the inside), and their tiles of
// `tile` pixels in the convolution's tile order. Returns the number of tiles.
inline std::int64_t CutRegions(const BConv2DParams& p, int tile,
                               std::unique_ptr<ConvRegion[]>* regions) {
  std::unique_ptr<TapBand[]> h_bands(new TapBand[p.out_h]);
  std::unique_ptr<TapBand[]> w_bands(new TapBand[p.out_w]);
  const int nh =
      AxisBands(p.out_h, p.in_h, p.kernel_h, p.stride_h, p.dilation_h, p.pad_top, h_bands.get());
  const int nw =
      AxisBands(p.out_w, p.in_w, p.kernel_w, p.stride_w, p.dilation_w, p.pad_left, w_bands.get());
  const int count = nh * nw;
  regions->reset(new ConvRegion[count]);
  std::int64_t tiles = 0;
  for (int i = 0; i < count; ++i) {
    ConvRegion& r = (*regions)[i];
    r.h = h_bands[i / nw];
    r.w = w_bands[i % nw];
    r.pixels = p.batch * r.h.count * r.w.count;
    r.first_tile = tiles;
    tiles += (r.pixels + tile - 1) / tile;
    r.end_tile = tiles;
  }
  return tiles;
}

// The runs of input words that a region's pixels read, with where each run's
// filter words start. With dilation_w == 1 the taps kx0..kx1 of a kernel row
// are contiguous in the input and in the filter: one run per kernel row;
// otherwise one run per tap.
struct RegionRuns {
  std::int64_t segments = 0;   // runs per pixel
  std::int64_t run_words = 0;  // input words per run
  std::int64_t used_taps = 0;  // taps inside the input
};

// The region's runs: filter_offsets[s] = where run s's filter words start
// in a block's filter; input_offsets[s] = where its input words start, in
// words from the pixel's origin (the input word of tap (0, 0), which may lie
// in the padding).
inline RegionRuns RegionLayout(const BConv2DParams& p, const ConvRegion& r, std::int64_t bw,
                               std::int64_t* filter_offsets, std::int64_t* input_offsets) {
  RegionRuns runs;
  const std::int64_t words = p.words();
  const std::int64_t rows = r.h.k1 >= r.h.k0 ? r.h.k1 - r.h.k0 + 1 : 0;
  const std::int64_t cols = r.w.k1 >= r.w.k0 ? r.w.k1 - r.w.k0 + 1 : 0;
  runs.used_taps = rows * cols;
  if (runs.used_taps == 0) return runs;
  const bool row_runs = p.dilation_w == 1;
  runs.run_words = row_runs ? cols * words : words;
  for (std::int64_t ky = r.h.k0; ky <= r.h.k1; ++ky) {
    for (std::int64_t kx = r.w.k0; kx <= (row_runs ? r.w.k0 : r.w.k1); ++kx) {
      filter_offsets[runs.segments] = (ky * p.kernel_w + kx) * words * bw;
      input_offsets[runs.segments] = (ky * p.dilation_h * p.in_w + kx * p.dilation_w) * words;
      ++runs.segments;
    }
  }
  return runs;
}

// Where BuildTileRows stopped: the position of the region's pixel `next`
// (the one after the last tile built), so that the next tile of the same
// region starts from it instead of from three divisions.
struct TileCursor {
  const ConvRegion* region = nullptr;
  std::int64_t next = -1;
  std::int64_t n = 0, oy = 0, ox = 0, at = 0, index = 0;
};

// The indirection table of one tile: rows[s * tile + i] for run s of the
// region's pixel first + i (i < count; entries past count repeat the last
// pixel, so that a full-size micro-kernel would stay in bounds), and
// pixel[i] = the output pixel's index in [batch, out_h, out_w]. Along an
// output row the origin moves by stride_w pixels: only a row change costs
// multiplications. With a cursor, a tile that starts where the cursor's
// last one ended (tiles in order) takes its position from it.
inline void BuildTileRows(const BConv2DParams& p, const SimdConvArgs& a, const ConvRegion& r,
                          std::int64_t first, int count, int tile, const RegionRuns& runs,
                          const std::int64_t* input_offsets, const PackedWord** rows,
                          std::int64_t* pixel, TileCursor* cursor = nullptr) {
  const std::int64_t words = p.words();
  const std::int64_t segments = runs.segments;
  const bool resume = cursor != nullptr && cursor->region == &r && cursor->next == first;
  std::int64_t n, oy, ox;
  if (resume) {
    n = cursor->n, oy = cursor->oy, ox = cursor->ox;
  } else {
    const std::int64_t region_rows = r.h.count * r.w.count;
    n = first / region_rows;
    oy = r.h.first + (first % region_rows) / r.w.count;
    ox = r.w.first + first % r.w.count;
  }
  auto origin = [&] {
    return ((n * p.in_h + oy * p.stride_h - p.pad_top) * p.in_w + ox * p.stride_w - p.pad_left) *
           words;
  };
  std::int64_t at = resume ? cursor->at : origin();
  std::int64_t index = resume ? cursor->index : (n * p.out_h + oy) * p.out_w + ox;
  const std::int64_t step = p.stride_w * words;
  const std::int64_t row_end = r.w.first + r.w.count;
  for (int i = 0; i < count; ++i) {
    pixel[i] = index;
    for (std::int64_t s = 0; s < segments; ++s) rows[s * tile + i] = a.input + (at + input_offsets[s]);
    if (++ox < row_end) {
      at += step;
      ++index;
      continue;
    }
    ox = r.w.first;
    if (++oy == r.h.first + r.h.count) {
      oy = r.h.first;
      ++n;
    }
    at = origin();
    index = (n * p.out_h + oy) * p.out_w + ox;
  }
  if (cursor != nullptr) *cursor = {&r, first + count, n, oy, ox, at, index};
  for (int i = count; i < tile; ++i) {
    pixel[i] = pixel[count - 1];
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
  const std::int64_t cout = p.out_channels;
  const std::int64_t blocks = (cout + BW - 1) / BW;
  const std::int32_t channels = static_cast<std::int32_t>(p.channels_in);
  const bool relu = p.activation == Activation::kRelu;
  // Padded taps are skipped; with pad_value 1 each adds popcount(w[c, t]).
  const bool pad_ones = p.padding != Padding::kValid && p.pad_value == 1;
  const bool post_affine = a.epilogue.post_multiplier != nullptr;
  const float* const residual = a.epilogue.residual;
  const std::int8_t* const residual_int8 = a.epilogue.residual_int8;
  std::int8_t* const output_int8 = a.output_int8;
  PackedWord* const output_bits = a.output_bits;
  // The tile's values go out as they are computed: no epilogue, float output.
  const bool plain = !post_affine && residual == nullptr && residual_int8 == nullptr &&
                     output_int8 == nullptr && output_bits == nullptr;
  // ReLU as max(floor, y): see TransformLanesFloor.
  const FVec floor = Isa::SetF(relu ? 0.0f : -std::numeric_limits<float>::infinity());
  // The int8 residual's dequantization and the int8 output's quantization.
  const IVec residual_zero_point = Isa::Set32(a.epilogue.residual_zero_point);
  const FVec residual_scale = Isa::SetF(a.epilogue.residual_scale);
  const FVec inverse_scale = Isa::SetF(a.output_quantization.inverse_scale());
  const IVec zero_point = Isa::Set32(a.output_quantization.zero_point);
  const IVec lowest = Isa::Set32(a.output_quantization.lowest());

  // Whether 2 m is exact for every multiplier m (finite, no overflow): the
  // condition of the doubled multiplier of the plain output path below.
  // (The bit-packed output reads no multiplier.)
  bool doubling_exact = true;
  for (std::int64_t c = 0; output_bits == nullptr && c < cout; ++c) {
    doubling_exact = doubling_exact && std::fabs(a.multiplier[c]) <=
                                           std::numeric_limits<float>::max() / 2;
  }

  // Bit-packed output: the thresholds padded to whole blocks with INT32_MIN
  // (D < INT32_MIN never holds, and the padding has no flips: the bits past
  // out_channels come out 0) and each block's flips as one BW-bit mask.
  static_assert(BW % 8 == 0 && BW <= kBitsPerWord, "a block's bits are whole bytes of a word");
  const std::int64_t out_words = PackedWords(cout);
  // Bytes of a packed row past the last block (AVX2: 0 or a half word).
  const auto tail_bytes = static_cast<std::size_t>(out_words * 4 - blocks * BW / 8);
  std::unique_ptr<std::int32_t[]> block_threshold;
  std::unique_ptr<std::uint32_t[]> block_flip;
  if (output_bits != nullptr) {
    block_threshold.reset(new std::int32_t[blocks * BW]);
    block_flip.reset(new std::uint32_t[blocks]());
    for (std::int64_t c = 0; c < blocks * BW; ++c) {
      block_threshold[c] = c < cout ? a.threshold[c] : std::numeric_limits<std::int32_t>::min();
    }
    for (std::int64_t c = 0; c < cout; ++c) {
      block_flip[c / BW] |= static_cast<std::uint32_t>(a.flip[c] & 1u) << (c % BW);
    }
  }

  std::unique_ptr<ConvRegion[]> region;
  const std::int64_t tiles = CutRegions(p, P, &region);
  // Work items are (tile, block) pairs, tile-major: a thread's contiguous
  // range builds a tile's indirection table once and sweeps the blocks.
  const std::int64_t cost = P * taps * words * V * 3;

  executor.ParallelFor(tiles * blocks, cost, [&](std::int64_t begin, std::int64_t end) {
    // Per range scratch (new[] rather than a container: see SimdConvArgs).
    // rows[i]: where pixel i's first run starts (null until a region with
    // taps inside the input sets it); its run s starts run_starts[s] words
    // further on, the same for every pixel of the region.
    const PackedWord* rows[P] = {};
    std::unique_ptr<std::int64_t[]> filter_offsets(new std::int64_t[taps]);
    std::unique_ptr<std::int64_t[]> input_offsets(new std::int64_t[taps]);
    std::unique_ptr<std::int64_t[]> run_starts(new std::int64_t[taps]);
    // pixel[i]: the output pixel's index; its output starts at pixel[i] *
    // cout. (Not kept as a second table computed per tile: GCC vectorised
    // that product, its 64-byte load of pixel[] right after BuildTileRows'
    // 8-byte stores could not be store-forwarded and stalled, 2.5% of the
    // samples of a 3x3 56x56x64 conv.)
    std::int64_t pixel[P];
    // The accumulators of one tile and block, [pixel][lane], for the output
    // loops below (an L1 buffer: 1.5 KB on AVX-512).
    alignas(64) std::int32_t tile_acc[P * BW];
    TileCursor cursor;
    int current = -1;  // region of the range's current tile (ranges are in tile order)
    RegionRuns runs, first_run;
    std::int64_t built_tile = -1;
    int count = 0;
    // item = tile * blocks + block, stepped without dividing per item.
    std::int64_t tile = begin / blocks, block = begin % blocks;
    for (std::int64_t item = begin; item < end; ++item, ++block) {
      if (block == blocks) {
        block = 0;
        ++tile;
      }
      if (tile != built_tile) {
        if (current < 0 || tile >= region[current].end_tile) {
          do ++current;
          while (tile >= region[current].end_tile);
          runs = RegionLayout(p, region[current], BW, filter_offsets.get(), input_offsets.get());
          for (std::int64_t s = 0; s < runs.segments; ++s) {
            run_starts[s] = input_offsets[s] - input_offsets[0];
          }
          first_run = runs;
          first_run.segments = runs.segments > 0 ? 1 : 0;
        }
        const ConvRegion& r = region[current];
        const std::int64_t first = (tile - r.first_tile) * P;
        count = static_cast<int>(r.pixels - first < P ? r.pixels - first : P);
        BuildTileRows(p, a, r, first, count, P, first_run, input_offsets.get(), rows, pixel,
                      &cursor);
        built_tile = tile;
      }
      const ConvRegion& r = region[current];
      const std::int64_t c0 = block * BW;
      const int block_channels = static_cast<int>(cout - c0 < BW ? cout - c0 : BW);
      const int vectors = (block_channels + L - 1) / L;
      const PackedWord* w = a.filter + block * taps * words * BW;

      // dot = K - 2 * acc over the taps that count: all of them with pad_value
      // 1 (the skipped ones are +1 pixels), the used ones otherwise.
      const std::int32_t k_used_value =
          channels * static_cast<std::int32_t>(pad_ones ? taps : runs.used_taps);
      const bool add_skipped = pad_ones && runs.used_taps < taps;
      const std::int64_t* offsets = filter_offsets.get();
      const std::int64_t* starts = run_starts.get();
      const std::int64_t segments = runs.segments, run_words = runs.run_words;

      // The epilogue of both output paths below, on the transformed y of
      // vector v (n of its lanes real) at output index `at`: the post affine
      // and residual steps (BConv2DEpilogue::Apply, the same roundings; an
      // int8 residual's codes read here and dequantized in the registers),
      // then the store, of y or of its int8 codes (QuantizeLanes: the
      // quantization done in the registers, no float output anywhere).
      // It runs in a loop over the tile's accumulators, which the
      // micro-kernel stores to tile_acc (to_tile), not inside the
      // micro-kernel: its 24 accumulators, filter vectors and broadcasts fill
      // the 32 zmm registers, and the epilogue's dozen constant vectors live
      // across its loop made GCC spill a filter vector into the hot loop
      // (12 more loads a word: 10% on a 14x14x256 conv). The 24 stores and
      // loads of L1 cost far less.
      FVec post_mult[V], post_bias[V];
      for (int v = 0; v < V; ++v) post_mult[v] = post_bias[v] = Isa::ZeroF();
      for (int v = 0; post_affine && v < vectors; ++v) {
        const int n = block_channels - v * L;
        post_mult[v] = Isa::LoadF(a.epilogue.post_multiplier + c0 + v * L, n);
        post_bias[v] = Isa::LoadF(a.epilogue.post_bias + c0 + v * L, n);
      }
      auto finish = [&](FVec y, int v, std::int64_t at, int n) LOWBIT_INLINE {
        if (post_affine) y = Isa::AddF(Isa::MulF(y, post_mult[v]), post_bias[v]);
        if (residual != nullptr) y = Isa::AddF(y, Isa::LoadF(residual + at, n));
        if (residual_int8 != nullptr) {
          const IVec q = Isa::Sub32(Isa::LoadInt8(residual_int8 + at, n), residual_zero_point);
          y = Isa::AddF(y, Isa::MulF(Isa::ToFloat(q), residual_scale));
        }
        if (output_int8 != nullptr) {
          Isa::StoreInt8(output_int8 + at,
                         QuantizeLanes<Isa>(y, inverse_scale, zero_point, lowest), n);
        } else {
          Isa::StoreF(a.output + at, y, n);
        }
      };
      // The bit-packed output of pixel i of the tile (instead of `finish`):
      // `below` holds the bits (dot < threshold) of channels c0 .. c0 + BW -
      // 1 (Isa::LessMask per vector against `threshold`), stored after the
      // flips as BW / 8 bytes at bit c0 of the pixel's packed row. x86 is
      // little-endian (bit c of a word is bit c % 8 of its byte c / 8), so
      // AVX2's 16-channel blocks write half words and two blocks of one word
      // (which two threads may hold) never write the same byte. The last
      // block also zeroes the row's bytes past it (AVX2: the half word past
      // out_channels).
      const std::int32_t* const threshold =
          output_bits != nullptr ? block_threshold.get() + c0 : nullptr;
      auto store_bits = [&](int i, std::uint32_t below) LOWBIT_INLINE {
        const std::uint32_t bits = below ^ block_flip[block];
        auto* row = reinterpret_cast<unsigned char*>(output_bits + pixel[i] * out_words);
        std::memcpy(row + c0 / 8, &bits, BW / 8);
        if (tail_bytes != 0 && block == blocks - 1) std::memset(row + (c0 + BW) / 8, 0, tail_bytes);
      };
      int first_pixel = 0;  // of the micro-kernel call, within the tile
      auto to_tile = [&](int i, int v, IVec acc_v) LOWBIT_INLINE {
        Isa::Store(tile_acc + ((first_pixel + i) * V + v) * L, acc_v);
      };

      if (count == P && block_channels == BW && !add_skipped && doubling_exact &&
          k_used_value % 2 == 0) {
        // The common case, a full tile of a full block, every vector whole,
        // with no per-vector tests. The accumulators count down from k / 2
        // (k = K_used, even), so they end at a = k / 2 - acc and dot = 2a;
        // then
        //     float(dot) * m = float(a) * (2 m)
        // exactly: float(a) and 2 m are exact (|a| < 2^23; doubling_exact),
        // so both products are the same real number rounded once. That
        // leaves convert, multiply, add (and max for ReLU) per vector, half
        // of what the transform costs otherwise: on a 1x1 conv of 128
        // channels it is a third of the work. With no epilogue and a float
        // output (plain) the values are stored straight from the registers
        // to the tile's output rows; else through tile_acc and `finish`.
        FVec mult2[V], bias2[V];
        for (int v = 0; v < V; ++v) mult2[v] = bias2[v] = Isa::ZeroF();
        for (int v = 0; output_bits == nullptr && v < V; ++v) {
          const FVec m = Isa::LoadF(a.multiplier + c0 + v * L, L);
          mult2[v] = Isa::AddF(m, m);
          bias2[v] = Isa::LoadF(a.bias + c0 + v * L, L);
        }
        const IVec half_k = Isa::Set32(k_used_value / 2);
        if (output_bits != nullptr) {
          // Bit-packed: compared straight from the registers (dot = 2a), the
          // thresholds read from memory after the hot loop (no constant
          // vector lives across it).
          std::uint32_t below[P] = {};
          auto bits_sink = [&](int i, int v, IVec a_v) LOWBIT_INLINE {
            below[i] |= Isa::LessMask(Isa::Add32(a_v, a_v), Isa::Load(threshold + v * L))
                        << (v * L);
          };
          AccumulateTile<Isa, P, V, true>(rows, starts, segments, run_words, w, offsets,
                                          bits_sink, half_k);
          for (int i = 0; i < P; ++i) store_bits(i, below[i]);
          continue;
        }
        if (!plain) {
          AccumulateTile<Isa, P, V, true>(rows, starts, segments, run_words, w, offsets, to_tile,
                                          half_k);
          for (int i = 0; i < P; ++i) {
            LOWBIT_UNROLL
            for (int v = 0; v < V; ++v) {
              const IVec a_v = Isa::Load(tile_acc + (i * V + v) * L);
              // ReLU as max(floor, y) (TransformLanesFloor).
              const FVec y = Isa::MaxF(
                  floor, Isa::AddF(Isa::MulF(Isa::ToFloat(a_v), mult2[v]), bias2[v]));
              finish(y, v, pixel[i] * cout + c0 + v * L, L);
            }
          }
          continue;
        }
        // The output lines are prefetched for writing now, so that the
        // stores at the end find them in L1 instead of waiting for them in
        // a burst (a 1x1 conv's output rarely fits L1; measured 2-7% on
        // 1x1 convs of 64-256 channels).
        float* out[P];
        LOWBIT_UNROLL
        for (int i = 0; i < P; ++i) {
          out[i] = a.output + pixel[i] * cout + c0;
          for (int v = 0; v < V; ++v) __builtin_prefetch(out[i] + v * L, 1, 3);
        }
        auto run = [&](auto with_relu) {
          auto plain_sink = [&](int i, int v, IVec a_v) {
            FVec y = Isa::AddF(Isa::MulF(Isa::ToFloat(a_v), mult2[v]), bias2[v]);
            if constexpr (decltype(with_relu)::value) y = Isa::MaxF(Isa::ZeroF(), y);
            Isa::StoreF(out[i] + v * L, y, L);
          };
          AccumulateTile<Isa, P, V, true>(rows, starts, segments, run_words, w, offsets,
                                          plain_sink, half_k);
        };
        if (relu) {
          run(std::true_type{});
        } else {
          run(std::false_type{});
        }
        continue;
      }

      FVec mult[V], bias[V];
      IVec skipped[V];  // pad_value 1: sum of popcount(w[c, t]) over the skipped taps
      for (int v = 0; v < V; ++v) {
        mult[v] = bias[v] = Isa::ZeroF();
        skipped[v] = Isa::Zero();
      }
      for (int v = 0; output_bits == nullptr && v < vectors; ++v) {
        const int n = block_channels - v * L;
        mult[v] = Isa::LoadF(a.multiplier + c0 + v * L, n);
        bias[v] = Isa::LoadF(a.bias + c0 + v * L, n);
      }
      if (add_skipped) {
        const std::int32_t* tap_pop = a.tap_popcounts + block * taps * BW;
        for (std::int64_t ky = 0; ky < p.kernel_h; ++ky) {
          for (std::int64_t kx = 0; kx < p.kernel_w; ++kx) {
            if (ky >= r.h.k0 && ky <= r.h.k1 && kx >= r.w.k0 && kx <= r.w.k1) continue;
            for (int v = 0; v < V; ++v) {
              skipped[v] = Isa::Add32(skipped[v],
                                      Isa::Load(tap_pop + (ky * p.kernel_w + kx) * BW + v * L));
            }
          }
        }
      }
      const IVec k_used = Isa::Set32(k_used_value);
      if (count == P) {
        if (vectors == V) {
          AccumulateTile<Isa, P, V>(rows, starts, segments, run_words, w, offsets, to_tile);
        } else {
          AccumulateTile<Isa, P, 1>(rows, starts, segments, run_words, w, offsets, to_tile);
        }
      } else {
        // Last, partial tile of a region: runs of 4, 2 and 1 pixels, each
        // from its first pixel's entry of the table.
        while (first_pixel < count) {
          const int left = count - first_pixel;
          const int run = left >= 4 ? 4 : left >= 2 ? 2 : 1;
          const PackedWord* const* t = rows + first_pixel;
          if (run == 4) {
            if (vectors == V) {
              AccumulateTile<Isa, 4, V>(t, starts, segments, run_words, w, offsets, to_tile);
            } else {
              AccumulateTile<Isa, 4, 1>(t, starts, segments, run_words, w, offsets, to_tile);
            }
          } else if (run == 2) {
            if (vectors == V) {
              AccumulateTile<Isa, 2, V>(t, starts, segments, run_words, w, offsets, to_tile);
            } else {
              AccumulateTile<Isa, 2, 1>(t, starts, segments, run_words, w, offsets, to_tile);
            }
          } else {
            if (vectors == V) {
              AccumulateTile<Isa, 1, V>(t, starts, segments, run_words, w, offsets, to_tile);
            } else {
              AccumulateTile<Isa, 1, 1>(t, starts, segments, run_words, w, offsets, to_tile);
            }
          }
          first_pixel += run;
        }
      }
      // Output transform of the tile's vectors of lanes, vectorised over
      // channels, then the epilogue and the store.
      for (int i = 0; i < count; ++i) {
        if (output_bits != nullptr) {
          std::uint32_t below = 0;
          for (int v = 0; v < vectors; ++v) {
            IVec acc_v = Isa::Load(tile_acc + (i * V + v) * L);
            if (add_skipped) acc_v = Isa::Add32(acc_v, skipped[v]);
            const IVec dot = Isa::Sub32(k_used, Isa::Add32(acc_v, acc_v));
            below |= Isa::LessMask(dot, Isa::Load(threshold + v * L)) << (v * L);
          }
          store_bits(i, below);
          continue;
        }
        for (int v = 0; v < vectors; ++v) {
          IVec acc_v = Isa::Load(tile_acc + (i * V + v) * L);
          if (add_skipped) acc_v = Isa::Add32(acc_v, skipped[v]);
          const FVec y = TransformLanesFloor<Isa>(acc_v, k_used, mult[v], bias[v], floor);
          finish(y, v, pixel[i] * cout + c0 + v * L, block_channels - v * L);
        }
      }
    }
  });
}

}  // namespace
}  // namespace lowbit

#undef LOWBIT_UNROLL
#undef LOWBIT_INLINE

#endif  // LOWBIT_CORE_BCONV2D_SIMD_H_
