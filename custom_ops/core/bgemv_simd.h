// Internal: the GEMV path of BGemm, for fewer rows than the convolution's
// register tile (a binary dense layer at batch 1..P-1), written once over the
// ISA structs of the SIMD convolution (bconv2d_simd.h) and instantiated next
// to it by each ISA translation unit. Internal linkage, like bconv2d_simd.h.
//
// Why a separate kernel: BGemm is a 1x1 convolution over rows, and with
// rows < P the convolution driver only runs its partial-tile path: a 1 x V
// micro-kernel per channel block (V = 2 vectors, one filter stream), an
// indirection table copied per block and, for rows that split into runs of
// 4, 2 and 1, one pass over the weights per run. Here every call reads the
// weights once, with R x G x V accumulators in registers (R rows; G <=
// kMaxGemvBlocks channel blocks of V vectors of L lanes side by side): per
// input word it loads G * V filter vectors (word j of G consecutive blocks,
// i.e. G sequential streams), broadcasts the R input words and does
// 3 * R * G * V vector operations (XOR, popcount, add).
//
// Where the time goes at batch 1: one filter vector load per XOR + popcount +
// add, so the loop runs at the speed of the load port and of the cache level
// the weights come from as much as at the popcount's. Three things measured on
// AVX-512 (Sapphire Rapids, 1 thread, 1024 -> 1024, weights in L2):
//   - the filter is 64-byte aligned (BConv2DFilter's storage): with malloc's
//     16 bytes every zmm load straddled two cache lines; 1.7 -> 1.2 us;
//   - one accumulator per output vector, added to in place, and the word loop
//     unrolled U times (U words of R * G * V triples). The add chains are one
//     cycle long and not the limit (the load, XOR and popcount of a word do
//     not depend on the previous word): the earlier U round-robin accumulator
//     sets, which GCC rotated through register copies, measured the same;
//   - the output transform of a group runs straight on its accumulators with
//     whole-vector loads and stores and the ReLU as max(floor, y)
//     (TransformLanesFloor) for every group but the channel tail's: no
//     branch per vector, ~5% of a 1024 -> 1024 call (a group there is only 32
//     words).
// Weights beyond L2 (4096 -> 4096, 2 MiB) stream from L3 at 85-100% of a
// plain read of the same buffer (the memory floor of the benchmark's dense
// rows). Software prefetch of the filter streams measured no faster there
// nor at 1024 -> 1024 (prefetcht0 0.5 to 8 KiB ahead), prefetcht1 / t2 up to
// 30% slower: the hardware prefetchers keep up with G sequential streams.
//
// Threads split the channel blocks; a thread's range runs groups of G
// blocks, the tail groups of G/2, ... The budget A of an ISA (given by its
// translation unit: what fits its register file beside the filter vectors
// and, for the byte popcounts, the byte accumulators and lookup constants)
// bounds the accumulators, R * G * V, and the triples of an iteration of the
// word loop, R * G * V * U.
//
// Same layout (BConv2DFilter, a 1x1 kernel: [block][word][lane], channels
// past out_channels zero), same tails (input padding bits zero, masked loads
// and stores of multiplier, bias and output) and the same output transform,
// float(dot) * m + b as a separate multiply and add, ReLU as max(floor, y),
// as the convolution kernels (bconv2d_simd.h): bit-identical results.
#ifndef LOWBIT_CORE_BGEMV_SIMD_H_
#define LOWBIT_CORE_BGEMV_SIMD_H_

#include <cstdint>
#include <limits>
#include <type_traits>

#include "custom_ops/core/bconv2d_simd.h"
#include "custom_ops/core/bgemv_kernels.h"

namespace lowbit {
namespace {  // NOLINT: deliberate internal linkage in a header, see above.

// Full unrolling of the r / n loops keeps the accumulators in registers (as
// LOWBIT_UNROLL in bconv2d_simd.h, which undefines its macro at its end).
#if defined(__clang__)
#define LOWBIT_GEMV_UNROLL _Pragma("unroll")
#elif defined(__GNUC__)
#define LOWBIT_GEMV_UNROLL _Pragma("GCC unroll 16")
#else
#define LOWBIT_GEMV_UNROLL
#endif

// Channel blocks read side by side per input word, i.e. sequential filter
// streams. At batch 1 on 1024x1024 (weights in L2) 2 measured up to ~15%
// faster than 8 blocks side by side (16 cache-line streams from L2 per word)
// and 1 to 10% faster than 1 or 4.
constexpr int kMaxGemvBlocks = 2;

// Largest power of two <= max(n, 1).
constexpr int FloorPow2(int n) {
  int p = 1;
  while (p * 2 <= n) p *= 2;
  return p;
}

// acc + the popcounts of `bits`: per 32-bit lane, or per byte for the ISAs
// without a 32-bit-lane popcount (summed in 8-bit lanes, see AccumulateTile).
template <class Isa>
inline typename Isa::IVec AddPopcount(typename Isa::IVec acc, typename Isa::IVec bits) {
  if constexpr (Isa::kBytePopcount) {
    return Isa::Add8(acc, Isa::PopcountBytes(bits));
  } else {
    return Isa::Add32(acc, Isa::Popcount32(bits));
  }
}

// Popcount sums of R rows x N = G * V vectors: sum over words j of
// popcount(x[r][j] XOR w[block g][j][v * L + i]) in lane i of vector
// n = g * V + v. x: the R rows, `words` apart; w: block 0 of the group,
// blocks `block_words` apart, BW = Isa::kBlockWidth lanes per word. One
// accumulator per output vector, updated in place; the word loop is unrolled
// U times. The finished sums go to sink(r, n, sum) straight from the
// registers.
template <class Isa, int R, int G, int U, class Sink>
inline void AccumulateGemv(const PackedWord* x, std::int64_t words, const PackedWord* w,
                           std::int64_t block_words, Sink&& sink) {
  using IVec = typename Isa::IVec;
  constexpr int L = Isa::kLanes;
  constexpr int V = Isa::kBlockVectors;
  constexpr int BW = Isa::kBlockWidth;
  constexpr int N = G * V;
  IVec acc[R][N];
  LOWBIT_GEMV_UNROLL
  for (int r = 0; r < R; ++r) {
    LOWBIT_GEMV_UNROLL
    for (int n = 0; n < N; ++n) acc[r][n] = Isa::Zero();
  }
  // Words [j0, j1) into the accumulators `into` (32-bit or byte lanes).
  auto add_words = [&](std::int64_t j0, std::int64_t j1, IVec(&into)[R][N]) {
    auto add_word = [&](std::int64_t j) {
      IVec wv[N];
      LOWBIT_GEMV_UNROLL
      for (int g = 0; g < G; ++g) {
        LOWBIT_GEMV_UNROLL
        for (int v = 0; v < V; ++v) wv[g * V + v] = Isa::Load(w + g * block_words + j * BW + v * L);
      }
      LOWBIT_GEMV_UNROLL
      for (int r = 0; r < R; ++r) {
        const IVec xb = Isa::Broadcast(x + r * words + j);
        LOWBIT_GEMV_UNROLL
        for (int n = 0; n < N; ++n) into[r][n] = AddPopcount<Isa>(into[r][n], Isa::Xor(xb, wv[n]));
      }
    };
    std::int64_t j = j0;
    for (; j1 - j >= U; j += U) {
      LOWBIT_GEMV_UNROLL
      for (int u = 0; u < U; ++u) add_word(j + u);
    }
    for (; j < j1; ++j) add_word(j);
  };
  if constexpr (!Isa::kBytePopcount) {
    add_words(0, words, acc);
  } else {
    // Byte lanes hold at most kMaxByteSteps words: fold per window of words.
    IVec acc8[R][N];
    for (std::int64_t j0 = 0; j0 < words; j0 += kMaxByteSteps) {
      LOWBIT_GEMV_UNROLL
      for (int r = 0; r < R; ++r) {
        LOWBIT_GEMV_UNROLL
        for (int n = 0; n < N; ++n) acc8[r][n] = Isa::Zero();
      }
      add_words(j0, words - j0 < kMaxByteSteps ? words : j0 + kMaxByteSteps, acc8);
      LOWBIT_GEMV_UNROLL
      for (int r = 0; r < R; ++r) {
        LOWBIT_GEMV_UNROLL
        for (int n = 0; n < N; ++n) acc[r][n] = Isa::Add32(acc[r][n], Isa::SumBytesPerLane(acc8[r][n]));
      }
    }
  }
  LOWBIT_GEMV_UNROLL
  for (int r = 0; r < R; ++r) {
    LOWBIT_GEMV_UNROLL
    for (int n = 0; n < N; ++n) sink(r, n, acc[r][n]);
  }
}

// Blocks [b, end) of R rows: groups of G blocks, then the tail with G / 2, ...
template <class Isa, int A, int R, int G>
void GemvBlocks(const SimdGemvArgs& a, std::int64_t b, std::int64_t end) {
  using IVec = typename Isa::IVec;
  using FVec = typename Isa::FVec;
  constexpr int L = Isa::kLanes;
  constexpr int BW = Isa::kBlockWidth;
  constexpr int N = G * Isa::kBlockVectors;
  // Words per iteration of the word loop: A triples of R * N vectors (more
  // and the byte popcounts' temporaries spilled: AVX2 at U = 4).
  constexpr int U = FloorPow2(A / (R * N));
  const std::int64_t words = PackedWords(a.channels_in);
  const std::int64_t block_words = words * BW;
  const std::int64_t cout = a.out_channels;
  const PackedWord* const input = a.input;
  const float* const multiplier = a.multiplier;
  const float* const bias = a.bias;
  float* const output = a.output;
  const IVec k = Isa::Set32(static_cast<std::int32_t>(a.channels_in));
  const FVec floor = Isa::SetF(a.relu ? 0.0f : -std::numeric_limits<float>::infinity());
  for (; end - b >= G; b += G) {
    const std::int64_t c0 = b * BW;  // first channel of the group
    const PackedWord* const w = a.filter + b * block_words;
    // Vector n covers channels c0 + n * L + [0, L); `whole` (a compile-time
    // bool): every lane a real channel, whole-vector loads and stores, as for
    // every group but the last when the channels end inside it.
    auto run = [&](auto whole) {
      AccumulateGemv<Isa, R, G, U>(input, words, w, block_words, [=](int r, int n, IVec acc) {
        const std::int64_t c = c0 + static_cast<std::int64_t>(n) * L;
        int lanes = L;
        if constexpr (!decltype(whole)::value) {
          if (c >= cout) return;  // a zero channel of the last block's padding
          if (cout - c < L) lanes = static_cast<int>(cout - c);
        }
        Isa::StoreF(output + r * cout + c,
                    TransformLanesFloor<Isa>(acc, k, Isa::LoadF(multiplier + c, lanes),
                                             Isa::LoadF(bias + c, lanes), floor),
                    lanes);
      });
    };
    if (c0 + N * L <= cout) {
      run(std::true_type{});
    } else {
      run(std::false_type{});
    }
  }
  if constexpr (G > 1) GemvBlocks<Isa, A, R, G / 2>(a, b, end);
}

// The rows == R case within A accumulator vectors: G <= kMaxGemvBlocks
// blocks per group, the rest of the budget in accumulator sets.
template <class Isa, int A, int R>
void GemvRows(const SimdGemvArgs& a, ParallelExecutor& executor) {
  constexpr int V = Isa::kBlockVectors;
  constexpr int BW = Isa::kBlockWidth;
  constexpr int G = FloorPow2(A / (R * V)) < kMaxGemvBlocks ? FloorPow2(A / (R * V))
                                                              : kMaxGemvBlocks;
  const std::int64_t blocks = (a.out_channels + BW - 1) / BW;
  const std::int64_t cost = R * PackedWords(a.channels_in) * V * 3;
  executor.ParallelFor(blocks, cost, [&](std::int64_t begin, std::int64_t end) {
    GemvBlocks<Isa, A, R, G>(a, begin, end);
  });
}

// a.rows in [R, P): dispatch to GemvRows<..., a.rows>.
template <class Isa, int A, int R = 1>
void BGemvSimd(const SimdGemvArgs& a, ParallelExecutor& executor) {
  static_assert(R < Isa::kTilePixels, "the GEMV path covers rows below the conv tile");
  if (a.rows == R) {
    GemvRows<Isa, A, R>(a, executor);
  } else if constexpr (R + 1 < Isa::kTilePixels) {
    BGemvSimd<Isa, A, R + 1>(a, executor);
  }
}

}  // namespace
}  // namespace lowbit

#undef LOWBIT_GEMV_UNROLL

#endif  // LOWBIT_CORE_BGEMV_SIMD_H_
