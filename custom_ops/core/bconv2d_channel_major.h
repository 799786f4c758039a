// Internal: the driver of the binary convolution for kernels that vectorise
// the INPUT channels (NEON, core/bconv2d_neon.cc), on the channel-major filter
// layout (KernelPath::channel_major: within a block of BW output channels,
// each channel's taps x words contiguous; the block padded with zero
// channels, see BConv2DFilter). Internal linkage, as core/bconv2d_simd.h.
//
// It shares the x86 driver's geometry (core/bconv2d_simd.h: regions whose
// pixels read the same taps, skipped padded taps, the indirection table of a
// tile, K_used and tap popcounts for pad_value 1) and differs in two ways:
//   - the micro-kernel, Isa::AccumulateBlocks<Q>, hands back twice the
//     popcount sums of its whole tile (Q pixels x BW channels, as V vectors
//     of L lanes per pixel; doubled because the output transform wants
//     K - 2 * sum and the kernels double them for free) for a run of
//     channel blocks, instead of calling a sink per vector;
//   - a work item is a tile and a run of consecutive channel blocks, and
//     RunTileBlocks sweeps them out of line with the per-layer values in one
//     struct: the output transform of a block is loaded into registers once
//     and each vector of lanes costs a subtraction (dot = K - 2 * acc),
//     the conversion, a multiply and an add, then the ReLU and the epilogue's
//     steps where the layer has them (chosen once per block, not tested per
//     vector) and a store. An ISA may store a tile's whole blocks itself
//     (Isa::kStoresBlocks<Q>, Isa::StoreBlocks: the same operations, e.g.
//     in assembly), given each block's kk;
//   - a whole tile that continues the previous one along its output row
//     steps that tile's run pointers instead of building its table again.
// Why: the micro-kernels of Arm do ~110 instructions per 4,096 binary MACs,
// so per-(tile, block) work of a few hundred instructions (a sink through a
// closure reloading its captures after every float store, a function call
// per vector) cost as much as the popcounts themselves.
//
// The output transform and epilogue are those of core/bconv2d_simd.h
// (TransformLanesFloor, BConv2DEpilogue::Apply: the same operations in the same
// order, no fused multiply-add), so the results are bit-identical to the
// reference kernel.
#ifndef LOWBIT_CORE_BCONV2D_CHANNEL_MAJOR_H_
#define LOWBIT_CORE_BCONV2D_CHANNEL_MAJOR_H_

#include <cstdint>
#include <memory>
#include <type_traits>

#include "custom_ops/core/bconv2d_simd.h"

namespace lowbit {
namespace {  // NOLINT: deliberate internal linkage in a header, see above.

#if defined(__clang__)
#define LOWBIT_CM_UNROLL _Pragma("unroll")
#elif defined(__GNUC__)
#define LOWBIT_CM_UNROLL _Pragma("GCC unroll 16")
#else
#define LOWBIT_CM_UNROLL
#endif
#if defined(__GNUC__) || defined(__clang__)
#define LOWBIT_CM_INLINE __attribute__((always_inline))
#define LOWBIT_CM_NOINLINE __attribute__((noinline))
#else
#define LOWBIT_CM_INLINE
#define LOWBIT_CM_NOINLINE
#endif

// What every item of one call shares.
struct ChannelMajorLayer {
  const PackedWord* filter = nullptr;  // BConv2DFilter's channel-major layout
  std::int64_t block_words = 0;        // words per block of the filter: BW * taps * words
  std::int64_t channel_stride = 0;     // words per channel: taps * words
  std::int64_t taps = 0;
  bool word_pairs = false;  // the block's layout: Isa::WordPairs(words)
  const std::int32_t* tap_popcounts = nullptr;  // [block][tap][lane]
  // Per-channel values padded to whole blocks (zero past out_channels);
  // post_mult / post_bias nullptr without a post affine.
  const float *mult = nullptr, *bias = nullptr, *post_mult = nullptr, *post_bias = nullptr;
  const float* residual = nullptr;
  float* output = nullptr;
  std::int64_t cout = 0;
  bool relu = false;
};

// What the blocks of one tile share.
struct ChannelMajorTile {
  const PackedWord* const* rows = nullptr;  // [segment][pixel] run starts
  std::int64_t segments = 0, words = 0;     // runs per pixel, words per run
  const std::int64_t* filter_offsets = nullptr;
  const std::int64_t* skipped_taps = nullptr;  // pad_value 1: taps outside the input
  std::int64_t skipped_count = 0;
  std::int32_t k_used = 0;                  // K over the taps that count
  const std::int64_t* pixels = nullptr;     // output pixel indices, as many as
                                            // RunTileBlocks' Q (a region's last,
                                            // partial tile runs as tiles of 2 and 1)
};

// Blocks [block_begin, block_end) of a tile of Q pixels: micro-kernel, then
// the output transform and epilogue of each block. Out of line: its values
// stay in registers across the float stores (in the driver's frame they are
// reloaded after each one).
template <class Isa, int Q>
LOWBIT_CM_NOINLINE void RunTileBlocks(const ChannelMajorLayer& layer, const ChannelMajorTile& tile,
                                      std::int64_t block_begin, std::int64_t block_end,
                                      typename Isa::IVec (*all_sums)[Q][Isa::kBlockVectors],
                                      typename Isa::IVec (*kk_scratch)[Isa::kBlockVectors]) {
  using IVec = typename Isa::IVec;
  using FVec = typename Isa::FVec;
  constexpr int V = Isa::kBlockVectors;
  constexpr int L = Isa::kLanes;
  constexpr int BW = Isa::kBlockWidth;
  const IVec k = Isa::Set32(tile.k_used);
  // Locals rather than fields read through `layer` and `tile`: NEON stores
  // may alias anything, so fields would be reloaded (and what is derived from
  // them recomputed) after every store. Where each pixel's outputs (and
  // residuals) start:
  float* out_at[Q];
  const float* residual_at[Q];
  LOWBIT_CM_UNROLL
  for (int p = 0; p < Q; ++p) {
    const std::int64_t at = tile.pixels[p] * layer.cout;
    out_at[p] = layer.output + at;
    residual_at[p] = layer.residual != nullptr ? layer.residual + at : nullptr;
  }
  const bool affine = layer.post_mult != nullptr;
  const PackedWord* const* const rows = tile.rows;
  const std::int64_t segments = tile.segments, words = tile.words;
  const std::int64_t* const filter_offsets = tile.filter_offsets;
  const PackedWord* const filter = layer.filter;
  const std::int64_t block_words = layer.block_words, channel_stride = layer.channel_stride;
  // The micro-kernel for every block first (all_sums has room for a tile's
  // blocks), then the stores, which no assembly interrupts.
  Isa::template AccumulateBlocks<Q>(rows, segments, words, filter + block_begin * block_words,
                                    block_words, filter_offsets, channel_stride,
                                    layer.word_pairs, block_end - block_begin, all_sums);
  // dot = K - 2 * (acc + skipped) = kk - 2 * acc for a block: pad_value 1
  // makes a skipped tap a +1 pixel, which adds popcount(w[c, t]).
  auto block_kk = [&](std::int64_t block, IVec (&kk)[V]) LOWBIT_CM_INLINE {
    LOWBIT_CM_UNROLL
    for (int v = 0; v < V; ++v) kk[v] = k;
    const std::int32_t* tap_pop = layer.tap_popcounts + block * layer.taps * BW;
    for (std::int64_t i = 0; i < tile.skipped_count; ++i) {
      LOWBIT_CM_UNROLL
      for (int v = 0; v < V; ++v) {
        const IVec pop = Isa::Load(tap_pop + tile.skipped_taps[i] * BW + v * L);
        kk[v] = Isa::Sub32(kk[v], Isa::Add32(pop, pop));
      }
    }
  };
  // One loop over the blocks per (ReLU?, post affine?, residual?), the flags
  // as types; within it, whole blocks and the layer's last, partial one.
  auto store_blocks = [&](auto relu_c, auto affine_c, auto residual_c) LOWBIT_CM_INLINE {
    constexpr bool kRelu = decltype(relu_c)::value;
    constexpr bool kAffine = decltype(affine_c)::value;
    constexpr bool kResidual = decltype(residual_c)::value;
    std::int64_t block = block_begin;
    if constexpr (Isa::template kStoresBlocks<Q>) {
      // The ISA's own loop over the whole blocks (the same operations).
      const std::int64_t whole_end = layer.cout / BW < block_end ? layer.cout / BW : block_end;
      if (whole_end > block_begin) {
        IVec k_only[V];  // no skipped taps: one kk for every block
        const IVec* kk = k_only;
        std::int64_t kk_step = 0;
        if (tile.skipped_count > 0) {  // one kk per block
          for (std::int64_t b = block_begin; b < whole_end; ++b) {
            block_kk(b, kk_scratch[b - block_begin]);
          }
          kk = kk_scratch[0];
          kk_step = V;
        } else {
          block_kk(block_begin, k_only);
        }
        const std::int64_t c0 = block_begin * BW;
        float* out[Q];
        const float* residual[Q];
        LOWBIT_CM_UNROLL
        for (int p = 0; p < Q; ++p) {
          out[p] = out_at[p] + c0;
          residual[p] = kResidual ? residual_at[p] + c0 : nullptr;
        }
        Isa::template StoreBlocks<Q, kRelu, kAffine, kResidual>(
            all_sums, layer.mult + c0, layer.bias + c0, kAffine ? layer.post_mult + c0 : nullptr,
            kAffine ? layer.post_bias + c0 : nullptr, kk, kk_step, out, residual,
            whole_end - block_begin);
        block = whole_end;
      }
    }
    for (; block < block_end; ++block) {
      const IVec (&sums)[Q][V] = all_sums[block - block_begin];
      const std::int64_t c0 = block * BW;
      FVec m[V], b[V], pm[V], pb[V];
      IVec kk[V];
      LOWBIT_CM_UNROLL
      for (int v = 0; v < V; ++v) {
        m[v] = Isa::LoadF(layer.mult + c0 + v * L, L);
        b[v] = Isa::LoadF(layer.bias + c0 + v * L, L);
        if (kAffine) {
          pm[v] = Isa::LoadF(layer.post_mult + c0 + v * L, L);
          pb[v] = Isa::LoadF(layer.post_bias + c0 + v * L, L);
        }
      }
      block_kk(block, kk);
      const int block_channels = static_cast<int>(layer.cout - c0 < BW ? layer.cout - c0 : BW);
      auto store = [&](auto full_c) LOWBIT_CM_INLINE {
        constexpr bool kFull = decltype(full_c)::value;
        LOWBIT_CM_UNROLL
        for (int p = 0; p < Q; ++p) {
          LOWBIT_CM_UNROLL
          for (int v = 0; v < V; ++v) {
            const int n = kFull ? L : block_channels - v * L;
            if (!kFull && n <= 0) break;  // lanes past the layer's last channel
            const IVec dot = Isa::Sub32(kk[v], sums[p][v]);  // sums are doubled
            FVec y = Isa::AddF(Isa::MulF(Isa::ToFloat(dot), m[v]), b[v]);
            if (kRelu) y = Isa::Relu(y);
            if (kAffine) y = Isa::AddF(Isa::MulF(y, pm[v]), pb[v]);
            if (kResidual) y = Isa::AddF(y, Isa::LoadF(residual_at[p] + c0 + v * L, n));
            Isa::StoreF(out_at[p] + c0 + v * L, y, n);
          }
        }
      };
      if (block_channels == BW) {
        store(std::true_type{});
      } else {
        store(std::false_type{});
      }
    }
  };
  auto with_epilogue = [&](auto relu_c) LOWBIT_CM_INLINE {
    if (affine) {
      if (layer.residual != nullptr) {
        store_blocks(relu_c, std::true_type{}, std::true_type{});
      } else {
        store_blocks(relu_c, std::true_type{}, std::false_type{});
      }
    } else if (layer.residual != nullptr) {
      store_blocks(relu_c, std::false_type{}, std::true_type{});
    } else {
      store_blocks(relu_c, std::false_type{}, std::false_type{});
    }
  };
  if (layer.relu) {
    with_epilogue(std::true_type{});
  } else {
    with_epilogue(std::false_type{});
  }
}

template <class Isa>
void BConv2DChannelMajor(const SimdConvArgs& a, ParallelExecutor& executor) {
  constexpr int P = Isa::kTilePixels;
  constexpr int BW = Isa::kBlockWidth;
  static_assert(P <= 4, "partial tiles are cut into runs of 2 and 1 pixels");
  const BConv2DParams& p = *a.params;
  const std::int64_t words = p.words();
  const std::int64_t taps = p.kernel_h * p.kernel_w;
  const std::int64_t cout = p.out_channels;
  const std::int64_t blocks = (cout + BW - 1) / BW;
  const std::int32_t channels = static_cast<std::int32_t>(p.channels_in);
  // Padded taps are skipped; with pad_value 1 each adds popcount(w[c, t]).
  const bool pad_ones = p.padding != Padding::kValid && p.pad_value == 1;
  const bool post_affine = a.epilogue.post_multiplier != nullptr;

  std::unique_ptr<ConvRegion[]> region;
  const std::int64_t tiles = CutRegions(p, P, &region);

  // The per-channel values padded to whole blocks (zeros past cout), so that
  // a block loads whole vectors.
  const std::int64_t padded_channels = blocks * BW;
  std::unique_ptr<float[]> padded(new float[4 * padded_channels]());
  for (std::int64_t c = 0; c < cout; ++c) {
    padded[c] = a.multiplier[c];
    padded[padded_channels + c] = a.bias[c];
    if (post_affine) {
      padded[2 * padded_channels + c] = a.epilogue.post_multiplier[c];
      padded[3 * padded_channels + c] = a.epilogue.post_bias[c];
    }
  }
  ChannelMajorLayer layer;
  layer.filter = a.filter;
  layer.channel_stride = taps * words;
  layer.block_words = BW * layer.channel_stride;
  layer.taps = taps;
  layer.word_pairs = Isa::WordPairs(words);
  layer.tap_popcounts = a.tap_popcounts;
  layer.mult = padded.get();
  layer.bias = padded.get() + padded_channels;
  if (post_affine) {
    layer.post_mult = padded.get() + 2 * padded_channels;
    layer.post_bias = padded.get() + 3 * padded_channels;
  }
  layer.residual = a.epilogue.residual;
  layer.output = a.output;
  layer.cout = cout;
  layer.relu = p.activation == Activation::kRelu;

  // Work items are (tile, block) pairs, tile-major, as in BConv2DSimd; a
  // thread's range is cut into runs of blocks of one tile.
  const std::int64_t cost = P * taps * words * BW;
  executor.ParallelFor(tiles * blocks, cost, [&](std::int64_t begin, std::int64_t end) {
    // Per range scratch (new[] rather than a container: see SimdConvArgs).
    std::unique_ptr<const PackedWord*[]> rows(new const PackedWord*[taps * P]);
    std::unique_ptr<const PackedWord*[]> small_rows(new const PackedWord*[taps * P]);
    std::unique_ptr<std::int64_t[]> filter_offsets(new std::int64_t[taps]);
    std::unique_ptr<std::int64_t[]> input_offsets(new std::int64_t[taps]);
    std::unique_ptr<std::int64_t[]> skipped_taps(new std::int64_t[taps]);
    // The sums of a tile's blocks, for the largest tile (runs of 2 and 1
    // pixels fit in it).
    using TileSums = typename Isa::IVec[P][Isa::kBlockVectors];
    std::unique_ptr<TileSums[]> sums(new TileSums[blocks]);
    // Each block's kk where the ISA stores whole blocks itself (see
    // RunTileBlocks) and padded taps were skipped.
    using BlockVectors = typename Isa::IVec[Isa::kBlockVectors];
    std::unique_ptr<BlockVectors[]> kk(new BlockVectors[blocks]);
    std::int64_t pixel[P];
    int current = -1;  // region of the range's current tile (ranges are in tile order)
    std::int64_t whole_tile = -1;  // the tile whose P pixels `rows` holds, if any
    RegionRuns runs;
    ChannelMajorTile job;
    for (std::int64_t item = begin; item < end;) {
      const std::int64_t tile = item / blocks;
      const std::int64_t block_begin = item % blocks;
      const std::int64_t block_end = end - item < blocks - block_begin ? block_begin + (end - item)
                                                                       : blocks;
      item += block_end - block_begin;
      if (current < 0 || tile >= region[current].end_tile) {
        do ++current;
        while (tile >= region[current].end_tile);
        const ConvRegion& r = region[current];
        runs = RegionLayout(p, r, 1, filter_offsets.get(), input_offsets.get());
        job.skipped_count = 0;
        if (pad_ones && runs.used_taps < taps) {
          for (std::int64_t ky = 0; ky < p.kernel_h; ++ky) {
            for (std::int64_t kx = 0; kx < p.kernel_w; ++kx) {
              if (ky >= r.h.k0 && ky <= r.h.k1 && kx >= r.w.k0 && kx <= r.w.k1) continue;
              skipped_taps[job.skipped_count++] = ky * p.kernel_w + kx;
            }
          }
        }
        // dot = K - 2 * acc over the taps that count: all of them with
        // pad_value 1 (the skipped ones are +1 pixels), the used ones otherwise.
        job.k_used = channels * static_cast<std::int32_t>(pad_ones ? taps : runs.used_taps);
        job.segments = runs.segments;
        job.words = runs.run_words;
        job.filter_offsets = filter_offsets.get();
        job.skipped_taps = skipped_taps.get();
      }
      const ConvRegion& r = region[current];
      const std::int64_t first = (tile - r.first_tile) * P;
      const int count = static_cast<int>(r.pixels - first < P ? r.pixels - first : P);
      const std::int64_t column = first % r.w.count;  // of the tile's first pixel in its row
      if (count == P && tile == whole_tile + 1 && column >= P && column + P <= r.w.count) {
        // The previous tile is this one's row, P columns to the left (same
        // region: a region's first tile is in column 0): every run moves
        // P columns on, each pixel index by P.
        const std::int64_t step = P * p.stride_w * words;
        const PackedWord** run = rows.get();
        for (std::int64_t s = 0; s < runs.segments; ++s, run += P) {
          LOWBIT_CM_UNROLL
          for (int i = 0; i < P; ++i) run[i] += step;
        }
        LOWBIT_CM_UNROLL
        for (int i = 0; i < P; ++i) pixel[i] += P;
      } else {
        BuildTileRows(p, a, r, first, count, P, runs, input_offsets.get(), rows.get(), pixel);
      }
      whole_tile = count == P ? tile : -1;
      if (count == P) {
        job.rows = rows.get();
        job.pixels = pixel;
        RunTileBlocks<Isa, P>(layer, job, block_begin, block_end, sums.get(), kk.get());
        continue;
      }
      // Last, partial tile of a region: runs of 2 and 1 pixels (P <= 4),
      // each through the table re-strided to its length.
      for (int done = 0; done < count;) {
        const int run = count - done >= 2 ? 2 : 1;
        for (std::int64_t s = 0; s < runs.segments; ++s) {
          for (int i = 0; i < run; ++i) small_rows[s * run + i] = rows[s * P + done + i];
        }
        job.rows = small_rows.get();
        job.pixels = pixel + done;
        // A smaller tile's sums in the same scratch, reinterpreted.
        using IVec = typename Isa::IVec;
        if (run == 2) {
          RunTileBlocks<Isa, 2>(layer, job, block_begin, block_end,
                                reinterpret_cast<IVec(*)[2][Isa::kBlockVectors]>(sums.get()),
                                kk.get());
        } else {
          RunTileBlocks<Isa, 1>(layer, job, block_begin, block_end,
                                reinterpret_cast<IVec(*)[1][Isa::kBlockVectors]>(sums.get()),
                                kk.get());
        }
        done += run;
      }
    }
  });
}

}  // namespace
}  // namespace lowbit

#undef LOWBIT_CM_UNROLL
#undef LOWBIT_CM_INLINE
#undef LOWBIT_CM_NOINLINE

#endif  // LOWBIT_CORE_BCONV2D_CHANNEL_MAJOR_H_
