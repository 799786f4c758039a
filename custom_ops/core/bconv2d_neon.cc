// The binary convolution for Arm NEON, aarch64 (Raspberry Pi 3/4/5 with a
// 64-bit OS, Android arm64) and armv7 with NEON (32-bit Raspberry Pi OS):
// micro-kernels written for Arm inside the channel-major driver of
// core/bconv2d_channel_major.h (regions, skipped padded taps, indirection
// table, output transform: the x86 driver's geometry).
//
// Why not the x86 scheme. The x86 kernels vectorise the OUTPUT channels
// (one 32-bit lane per channel, the input word broadcast): XOR, popcount,
// add per lane. NEON counts bits per byte only (CNT), so that scheme costs a
// broadcast per pixel and word plus byte accumulators that must be widened
// every 31 words; it reached 12-16 binary MACs per instruction.
//
// Here the INPUT channels are vectorised, as in the best hand-written Arm
// binary kernels: a q register holds 128 bits (4 words, a "chunk") of one
// pixel's receptive field, another the same 128 bits of one output channel's
// filter (the filter is channel-major: BConv2DFilter with
// KernelPath::channel_major, each channel's taps x words contiguous, so one
// load per channel and chunk, no broadcast). For a tile of P pixels x C
// channels, one chunk costs P + C loads and, per (pixel, channel) pair,
// three vector operations:
//     e = EOR(x_p, w_c); n = CNT(e)              16 byte counts (<= 8 each)
// and the accumulation, which folds bytes into 16-bit lanes pairwise:
//   aarch64: two pairs share one UADALP after an ADDP of their byte counts,
//       a = UADALP(a, ADDP(n_c, n_c+1))  (lanes 0-3: channel c, 4-7: c+1)
//     = 6 operations per 2 x 128 binary MACs, and half the accumulators;
//   armv7 (no q-form ADDP): a = VPADAL.U8(a, n_c) per pair, 3 operations.
// 3 operations per 128 MACs is the floor of the EOR/CNT/add method (every
// chunk of every pair needs its EOR and CNT, and adding the counts to a
// running sum is one more operation however it is grouped). That is also
// why there is no UDOT path for CPUs with the dot-product extension
// (Cortex-A76, Pi 5): UDOT(acc, n, ones) would replace the accumulation, one
// operation for one, and save nothing.
//
// Tiles (full ones in assembly, Blocks4x8 / Blocks2x4, which loop over a
// tile's channel blocks themselves): aarch64 (32 q registers) P = 4 pixels
// x C = 8 channels: 4 input + 8 filter registers, 16 accumulators, 4
// temporaries; a chunk is 12 loads + 96 operations + 2 for the loop, 4,096
// binary MACs (on the word-pair filter layout, NeonWordPairs: 6 loads, and
// the loop takes 2 chunks a step: 206 instructions for 8,192 MACs). armv7 (16 q registers) P = 2 x C = 4: 2 + 4 registers, 8
// accumulators, 2 temporaries; 6 loads + 24 operations + 3 for the loop,
// 1,024 MACs. Smaller tiles (a region's last pixels, BGemm's 1-3 rows) and
// receptive fields past the assembly's limit run AccumulateTile below, the
// same method in intrinsics.
//
// The end of a run of words that is not a whole chunk (channels_in not a
// multiple of 128, e.g. 64 channels: runs of 6 words): on aarch64 2 words
// are half a chunk, the 64 bits of two channels side by side in one
// register against the pixel's 64 bits twice (EOR, CNT and UADALP land the
// two channels in the accumulator's two halves: half the operations of a
// chunk), 1 word is the same with zero high words; elsewhere the words go
// into the low lanes of a zeroed register (zero bits XOR to zero in the input
// and the filter alike).
//
// The lanes' ranges: a 16-bit lane gains at most 2 x 16 (aarch64: two bytes
// of an ADDP, each <= 16) or 2 x 8 (armv7) per chunk. The assembly tiles
// reduce with 16-bit pairwise adds, so a channel's whole sum must fit 16
// bits: <= 511 chunks (kAsmMaxChunks, receptive fields up to ~65,000 bits);
// AccumulateTile folds its 16-bit sums into 32-bit ones every kMaxChunks
// chunks (2047 / 4095 = 65535 / gain) and takes any size.
#include "custom_ops/core/bconv2d_kernels.h"

#if LOWBIT_NEON_SIMD

#include <arm_neon.h>

#include "custom_ops/core/bconv2d_channel_major.h"

namespace lowbit {
namespace {

// The p / c loops of the micro-kernel must be fully unrolled so that the
// accumulators live in registers.
#if defined(__clang__)
#define LOWBIT_NEON_UNROLL _Pragma("unroll")
#else
#define LOWBIT_NEON_UNROLL _Pragma("GCC unroll 16")
#endif

#if defined(__GNUC__) || defined(__clang__)
#define LOWBIT_NEON_INLINE __attribute__((always_inline))
#else
#define LOWBIT_NEON_INLINE
#endif

#if defined(__aarch64__)
constexpr int kPairsShareAccumulator = 2;  // ADDP: one accumulator per 2 channels
constexpr std::int64_t kMaxChunks = 2047;  // 65535 / (2 * 16)
#else
constexpr int kPairsShareAccumulator = 1;
constexpr std::int64_t kMaxChunks = 4095;  // 65535 / (2 * 8)
#endif

// `n` (1 or 2) words at p as the low bits of a 64-bit value.
inline std::uint64_t LoadHalf(const PackedWord* p, std::int64_t n) {
  if (n == 2) return vget_lane_u64(vreinterpret_u64_u32(vld1_u32(p)), 0);
  return *p;
}

// `n` (1..3) words at p in the low lanes of a zeroed register.
inline uint32x4_t LoadPartial(const PackedWord* p, std::int64_t n) {
  if (n >= 2) {
    const uint32x2_t low = vld1_u32(p);
    const uint32x2_t high = n == 3 ? vld1_lane_u32(p + 2, vdup_n_u32(0), 0) : vdup_n_u32(0);
    return vcombine_u32(low, high);
  }
  return vld1q_lane_u32(p, vdupq_n_u32(0), 0);
}

// The assembly tiles' 16-bit sums are reduced with 16-bit pairwise adds, so
// a channel's whole sum must fit 16 bits: at most 511 chunks per tile (see
// each tile's reduction).
constexpr std::int64_t kAsmMaxChunks = 511;
// Zeros to start the assembly tiles' accumulators from (one load fills 4
// registers on aarch64, 2 on armv7).
alignas(16) constexpr std::uint8_t kZeroBlock[64] = {};

#if defined(__aarch64__)
// The full 4 x 8 tile in assembly. With intrinsics GCC schedules the 12
// loads of a chunk first and then spills 7 of the 16 accumulators (14 stack
// accesses per chunk, more for the loop); written out, a chunk is exactly 12
// post-indexed loads, the 96 vector operations and 2 loop instructions: 110
// instructions for 4,096 binary MACs (37 per instruction). On the word-pair
// layout (even words, NeonWordPairs) the 8 channels' 128 bits are 2 LD4s
// and the loop takes 2 chunks a step: 206 instructions for 8,192 binary MACs
// (40 per instruction), half a chunk 54 instead of 60. Tile-level work is
// written out too: a run's setup is 14 instructions (7 on the word-pair
// layout), the reduction 20, the layout and words % 4 are chosen once per
// call (each variant loops over the blocks itself).
//
// Registers: x19-x21 a block's table, filter offsets and runs left, x9-x12
// the 4 pixels' run pointers, x13-x17 and x4-x6 the 8 channels' (word-pair
// layout: x13, x14 the 2 groups'), x8 the
// chunk count; v0-v3 the pixels' 128 bits,
// v4-v11 the channels', v12-v15 temporaries, v16-v31 the accumulators
// (pixel p, pair a in v[16 + 4p + a]). Each pair (p; 2a, 2a+1) of a chunk:
//     eor t0, x_p, w_2a; eor t1, x_p, w_2a+1; cnt t0; cnt t1;
//     addp t0, t0, t1; uadalp acc, t0
// two pairs in flight at a time (v12, v13 and v14, v15).
#define LOWBIT_PAIRS(X, A0, A1, WA, WB, WC, WD)     \
  "eor v12.16b, " X ".16b, " WA ".16b\n\t"           \
  "eor v13.16b, " X ".16b, " WB ".16b\n\t"           \
  "eor v14.16b, " X ".16b, " WC ".16b\n\t"           \
  "eor v15.16b, " X ".16b, " WD ".16b\n\t"           \
  "cnt v12.16b, v12.16b\n\t"                         \
  "cnt v13.16b, v13.16b\n\t"                         \
  "cnt v14.16b, v14.16b\n\t"                         \
  "cnt v15.16b, v15.16b\n\t"                         \
  "addp v12.16b, v12.16b, v13.16b\n\t"               \
  "addp v14.16b, v14.16b, v15.16b\n\t"               \
  "uadalp " A0 ".8h, v12.16b\n\t"                    \
  "uadalp " A1 ".8h, v14.16b\n\t"
#define LOWBIT_PIXEL(X, A0, A1, A2, A3)                   \
  LOWBIT_PAIRS(X, A0, A1, "v4", "v5", "v6", "v7")         \
  LOWBIT_PAIRS(X, A2, A3, "v8", "v9", "v10", "v11")
// Half a chunk (see AccumulateTile): v4-v7 hold channel pairs side by side,
// X the pixel's 64 bits twice; no ADDP.
#define LOWBIT_HALF(X, A0, A1, A2, A3)               \
  "eor v12.16b, " X ".16b, v4.16b\n\t"               \
  "eor v13.16b, " X ".16b, v5.16b\n\t"               \
  "eor v14.16b, " X ".16b, v6.16b\n\t"               \
  "eor v15.16b, " X ".16b, v7.16b\n\t"               \
  "cnt v12.16b, v12.16b\n\t"                         \
  "cnt v13.16b, v13.16b\n\t"                         \
  "cnt v14.16b, v14.16b\n\t"                         \
  "cnt v15.16b, v15.16b\n\t"                         \
  "uadalp " A0 ".8h, v12.16b\n\t"                    \
  "uadalp " A1 ".8h, v13.16b\n\t"                    \
  "uadalp " A2 ".8h, v14.16b\n\t"                    \
  "uadalp " A3 ".8h, v15.16b\n\t"
#define LOWBIT_HALVES                                \
  LOWBIT_HALF("v0", "v16", "v17", "v18", "v19")      \
  LOWBIT_HALF("v1", "v20", "v21", "v22", "v23")      \
  LOWBIT_HALF("v2", "v24", "v25", "v26", "v27")      \
  LOWBIT_HALF("v3", "v28", "v29", "v30", "v31")
// Pixel p's 4 pairs -> twice its 8 channel sums, widened to two q registers
// R0 (channels 0-3) and R1 (4-7). Pairwise 16-bit adds: A0 | A1 -> [c0 c0 c1
// c1 c2 c2 c3 c3] (half sums), likewise for A2 | A3, then -> [c0 .. c7]; a
// channel's sum is 4 lanes of <= 32 per chunk, so this needs <= 511 chunks
// (kAsmMaxChunks). The widening shifts left by 1 for free (USHLL): the store
// then computes dot = K - 2 * sum with one subtraction.
#define LOWBIT_REDUCE(A0, A1, A2, A3, R0, R1)        \
  "addp v0.8h, " A0 ".8h, " A1 ".8h\n\t"             \
  "addp v1.8h, " A2 ".8h, " A3 ".8h\n\t"             \
  "addp v0.8h, v0.8h, v1.8h\n\t"                     \
  "ushll " R0 ".4s, v0.4h, #1\n\t"                   \
  "ushll2 " R1 ".4s, v0.8h, #1\n\t"
// A run's pointers: the 4 pixels' from the table, the 8 channels' from its
// filter offset, channel_stride bytes apart.
#define LOWBIT_RUN_POINTERS                          \
  "ldp x9, x10, [x19], #16\n\t"                      \
  "ldp x11, x12, [x19], #16\n\t"                     \
  "ldr x13, [x20], #8\n\t"                           \
  "add x13, %[filter], x13, lsl #2\n\t"              \
  "add x14, x13, %[stride]\n\t"                      \
  "add x15, x14, %[stride]\n\t"                      \
  "add x16, x15, %[stride]\n\t"                      \
  "add x17, x16, %[stride]\n\t"                      \
  "add x4, x17, %[stride]\n\t"                       \
  "add x5, x4, %[stride]\n\t"                        \
  "add x6, x5, %[stride]\n\t"
// The same on the word-pair layout (even words, see NeonWordPairs): the two
// groups of 4 channels at x13 and x14, a run's words at 4 x its word offset
// (16 bytes per word) in each group, the groups 4 channels' strides apart.
#define LOWBIT_PAIR_RUN_POINTERS                     \
  "ldp x9, x10, [x19], #16\n\t"                      \
  "ldp x11, x12, [x19], #16\n\t"                     \
  "ldr x13, [x20], #8\n\t"                           \
  "add x13, %[filter], x13, lsl #4\n\t"              \
  "add x14, x13, %[stride], lsl #2\n\t"
// The four pixels of a chunk once pixel 0 (v0) and the filter (v4-v11) are
// loaded: each pixel's load interleaved with the previous pixel's work, and
// COUNT (the chunk counter's step, or nothing) before the last pixel.
#define LOWBIT_FOUR_PIXELS(COUNT)                    \
  "ldr q1, [x10], #16\n\t"                           \
  LOWBIT_PIXEL("v0", "v16", "v17", "v18", "v19")     \
  "ldr q2, [x11], #16\n\t"                           \
  LOWBIT_PIXEL("v1", "v20", "v21", "v22", "v23")     \
  "ldr q3, [x12], #16\n\t"                           \
  LOWBIT_PIXEL("v2", "v24", "v25", "v26", "v27")     \
  COUNT                                              \
  LOWBIT_PIXEL("v3", "v28", "v29", "v30", "v31")
// A whole chunk; x8 counts them down.
#define LOWBIT_CHUNK                                 \
  "ldr q0, [x9], #16\n\t"                            \
  "ldr q4, [x13], #16\n\t"                           \
  "ldr q5, [x14], #16\n\t"                           \
  "ldr q6, [x15], #16\n\t"                           \
  "ldr q7, [x16], #16\n\t"                           \
  "ldr q8, [x17], #16\n\t"                           \
  "ldr q9, [x4], #16\n\t"                            \
  "ldr q10, [x5], #16\n\t"                           \
  "ldr q11, [x6], #16\n\t"                           \
  LOWBIT_FOUR_PIXELS("subs x8, x8, #1\n\t")
// A whole chunk on the word-pair layout: each LD4 (.2d) reads 4 channels'
// 128 bits (8 pairs of words, channel-interleaved) and splits them into
// v4-v7 (channels 0-3) or v8-v11 (4-7), the registers LOWBIT_CHUNK loads one
// by one.
#define LOWBIT_PAIR_CHUNK(COUNT)                     \
  "ldr q0, [x9], #16\n\t"                            \
  "ld4 {v4.2d, v5.2d, v6.2d, v7.2d}, [x13], #64\n\t" \
  "ld4 {v8.2d, v9.2d, v10.2d, v11.2d}, [x14], #64\n\t" \
  LOWBIT_FOUR_PIXELS(COUNT)
// Two words on the word-pair layout: a group's 32 bytes are already channel
// pairs side by side ([c0 | c1], [c2 | c3]).
#define LOWBIT_PAIR_TWO_WORDS                        \
  "ld1r {v0.2d}, [x9], #8\n\t"                       \
  "ld1r {v1.2d}, [x10], #8\n\t"                      \
  "ld1r {v2.2d}, [x11], #8\n\t"                      \
  "ld1r {v3.2d}, [x12], #8\n\t"                      \
  "ldp q4, q5, [x13], #32\n\t"                       \
  "ldp q6, q7, [x14], #32\n\t"                       \
  LOWBIT_HALVES
// Two words: the pixels' 64 bits twice, channel pairs side by side.
#define LOWBIT_TWO_WORDS                             \
  "ld1r {v0.2d}, [x9], #8\n\t"                       \
  "ld1r {v1.2d}, [x10], #8\n\t"                      \
  "ld1r {v2.2d}, [x11], #8\n\t"                      \
  "ld1r {v3.2d}, [x12], #8\n\t"                      \
  "ldr d4, [x13], #8\n\t"                            \
  "ld1 {v4.d}[1], [x14], #8\n\t"                     \
  "ldr d5, [x15], #8\n\t"                            \
  "ld1 {v5.d}[1], [x16], #8\n\t"                     \
  "ldr d6, [x17], #8\n\t"                            \
  "ld1 {v6.d}[1], [x4], #8\n\t"                      \
  "ldr d7, [x5], #8\n\t"                             \
  "ld1 {v7.d}[1], [x6], #8\n\t"                      \
  LOWBIT_HALVES
// One word: [word, 0] twice, channel pairs [w, 0, w', 0].
#define LOWBIT_ONE_WORD                              \
  "ldr s0, [x9]\n\t"                                 \
  "ldr s1, [x10]\n\t"                                \
  "ldr s2, [x11]\n\t"                                \
  "ldr s3, [x12]\n\t"                                \
  "dup v0.2d, v0.d[0]\n\t"                           \
  "dup v1.2d, v1.d[0]\n\t"                           \
  "dup v2.2d, v2.d[0]\n\t"                           \
  "dup v3.2d, v3.d[0]\n\t"                           \
  "ldr s4, [x13]\n\t"                                \
  "ld1 {v4.s}[2], [x14]\n\t"                         \
  "ldr s5, [x15]\n\t"                                \
  "ld1 {v5.s}[2], [x16]\n\t"                         \
  "ldr s6, [x17]\n\t"                                \
  "ld1 {v6.s}[2], [x4]\n\t"                          \
  "ldr s7, [x5]\n\t"                                 \
  "ld1 {v7.s}[2], [x6]\n\t"                          \
  LOWBIT_HALVES
// The loop over runs for one value of words % 4 (labels L0 runs, L1 chunks,
// L2 the run's end), the layout's POINTERS and CHUNK, with the tail TAIL; x8
// counts the whole chunks. The branch on words % 4 is taken once per call,
// not once per run.
#define LOWBIT_RUNS(L0, L1, L2, POINTERS, CHUNK, TAIL) \
  L0 ":\n\t"                                         \
  POINTERS                                           \
  "lsr x8, %[words], #2\n\t"                          \
  "cbz x8, " L2 "f\n\t"                              \
  L1 ":\n\t"                                         \
  CHUNK                                              \
  "b.ne " L1 "b\n\t"                                 \
  L2 ":\n\t"                                         \
  TAIL                                               \
  "subs x21, x21, #1\n\t"                            \
  "b.ne " L0 "b\n\t"
// The same on the word-pair layout, its chunks two per loop step (one loop
// count and branch per 2 chunks; an odd one after the loop).
#define LOWBIT_PAIR_RUNS(L0, L1, L2, L3, TAIL)         \
  L0 ":\n\t"                                           \
  LOWBIT_PAIR_RUN_POINTERS                             \
  "lsr x8, %[words], #3\n\t"                           \
  "cbz x8, " L2 "f\n\t"                                \
  L1 ":\n\t"                                           \
  LOWBIT_PAIR_CHUNK("")                                \
  LOWBIT_PAIR_CHUNK("subs x8, x8, #1\n\t")              \
  "b.ne " L1 "b\n\t"                                   \
  L2 ":\n\t"                                           \
  "tbz %[words], #2, " L3 "f\n\t"                      \
  LOWBIT_PAIR_CHUNK("")                                \
  L3 ":\n\t"                                           \
  TAIL                                                 \
  "subs x21, x21, #1\n\t"                              \
  "b.ne " L0 "b\n\t"
// A block: its runs from the first, its accumulators from zero (4 registers
// per load from a block of zeros: 4 instructions rather than 16 MOVIs).
#define LOWBIT_BLOCK_START                             \
  "mov x19, %[rows]\n\t"                               \
  "mov x20, %[offsets]\n\t"                            \
  "mov x21, %[segments]\n\t"                           \
  "ld1 {v16.16b, v17.16b, v18.16b, v19.16b}, [%[zeros]]\n\t" \
  "ld1 {v20.16b, v21.16b, v22.16b, v23.16b}, [%[zeros]]\n\t" \
  "ld1 {v24.16b, v25.16b, v26.16b, v27.16b}, [%[zeros]]\n\t" \
  "ld1 {v28.16b, v29.16b, v30.16b, v31.16b}, [%[zeros]]\n\t"
// A block's end: its sums out, the next block's filter.
#define LOWBIT_BLOCK_END                               \
  LOWBIT_REDUCE("v16", "v17", "v18", "v19", "v4", "v5")  \
  LOWBIT_REDUCE("v20", "v21", "v22", "v23", "v6", "v7")  \
  LOWBIT_REDUCE("v24", "v25", "v26", "v27", "v8", "v9")  \
  LOWBIT_REDUCE("v28", "v29", "v30", "v31", "v10", "v11") \
  "st1 {v4.4s, v5.4s, v6.4s, v7.4s}, [%[out]], #64\n\t" \
  "st1 {v8.4s, v9.4s, v10.4s, v11.4s}, [%[out]], #64\n\t" \
  "add %[filter], %[filter], %[block_bytes]\n\t"        \
  "subs %[blocks], %[blocks], #1\n\t"
// The loop over blocks (label LB) for one layout and value of words % 4,
// RUNS its runs: chosen once per call, not once per block.
#define LOWBIT_BLOCKS(LB, RUNS)                        \
  LB ":\n\t"                                           \
  LOWBIT_BLOCK_START                                   \
  RUNS                                                 \
  LOWBIT_BLOCK_END                                     \
  "b.ne " LB "b\n\t"                                   \
  "b 9f\n\t"

// sums[b][p][v] = the popcount sums of pixel p, channels 4v..4v+3 of block
// b (its filter at filter + b * block_bytes), over `segments` (>= 1) runs of
// `words` words (rows, filter_offsets as for AccumulateBlocks; channel c's
// words channel_stride_bytes apart, or on the word-pair layout its group's
// 4 x channel_stride_bytes: `word_pairs`), for `blocks` (>= 1) blocks. The 16-bit
// sums must not overflow: segments * (words / 4 + 2) <= kAsmMaxChunks.
inline void Blocks4x8(const PackedWord* const* rows, std::int64_t segments, std::int64_t words,
                      const PackedWord* filter, std::int64_t block_bytes,
                      const std::int64_t* filter_offsets, std::int64_t channel_stride_bytes,
                      bool word_pairs, std::int64_t blocks, uint32x4_t (*sums)[4][2]) {
  std::uint32_t* out = &sums[0][0][0][0];
  asm volatile(
      "and x8, %[words], #3\n\t"
      "cbz %[pairs], 1f\n\t"
      // The word-pair layout: runs of an even number of words.
      "cbz x8, 50f\n\t"
      "b 60f\n\t"
      "1:\n\t"
      "cbz x8, 10f\n\t"
      "cmp x8, #2\n\t"
      "b.lt 20f\n\t"
      "b.eq 30f\n\t"
      "b 40f\n\t"
      LOWBIT_BLOCKS("10", LOWBIT_RUNS("11", "12", "13", LOWBIT_RUN_POINTERS, LOWBIT_CHUNK, ""))
      LOWBIT_BLOCKS("20", LOWBIT_RUNS("21", "22", "23", LOWBIT_RUN_POINTERS, LOWBIT_CHUNK,
                                      LOWBIT_ONE_WORD))
      LOWBIT_BLOCKS("30", LOWBIT_RUNS("31", "32", "33", LOWBIT_RUN_POINTERS, LOWBIT_CHUNK,
                                      LOWBIT_TWO_WORDS))
      LOWBIT_BLOCKS("40", LOWBIT_RUNS("41", "42", "43", LOWBIT_RUN_POINTERS, LOWBIT_CHUNK,
                                      LOWBIT_TWO_WORDS LOWBIT_ONE_WORD))
      LOWBIT_BLOCKS("50", LOWBIT_PAIR_RUNS("51", "52", "53", "54", ""))
      LOWBIT_BLOCKS("60", LOWBIT_PAIR_RUNS("61", "62", "63", "64", LOWBIT_PAIR_TWO_WORDS))
      "9:\n\t"
      : [out] "+r"(out), [filter] "+r"(filter), [blocks] "+r"(blocks)
      : [rows] "r"(rows), [offsets] "r"(filter_offsets), [segments] "r"(segments),
        [stride] "r"(channel_stride_bytes), [words] "r"(words), [block_bytes] "r"(block_bytes),
        [zeros] "r"(kZeroBlock), [pairs] "r"(static_cast<std::int64_t>(word_pairs))
      : "cc", "memory", "x4", "x5", "x6", "x8", "x9", "x10", "x11", "x12", "x13", "x14", "x15",
        "x16", "x17", "x19", "x20", "x21", "v0", "v1", "v2", "v3", "v4", "v5", "v6", "v7", "v8",
        "v9", "v10", "v11", "v12", "v13", "v14", "v15", "v16", "v17", "v18", "v19", "v20", "v21",
        "v22", "v23", "v24", "v25", "v26", "v27", "v28", "v29", "v30", "v31");
}
#undef LOWBIT_BLOCKS
#undef LOWBIT_BLOCK_END
#undef LOWBIT_BLOCK_START
#undef LOWBIT_PAIR_RUNS
#undef LOWBIT_RUNS
#undef LOWBIT_ONE_WORD
#undef LOWBIT_TWO_WORDS
#undef LOWBIT_PAIR_TWO_WORDS
#undef LOWBIT_PAIR_CHUNK
#undef LOWBIT_CHUNK
#undef LOWBIT_FOUR_PIXELS
#undef LOWBIT_PAIR_RUN_POINTERS
#undef LOWBIT_RUN_POINTERS
#undef LOWBIT_REDUCE
#undef LOWBIT_HALVES
#undef LOWBIT_HALF
#undef LOWBIT_PIXEL
#undef LOWBIT_PAIRS

// The output transform and epilogue of whole blocks of the 4 x 8 tile (the
// channel-major driver's store, core/bconv2d_channel_major.h, written out).
// Per block and pixel, two vectors of 4 channels:
//     y = float(kk - sums) * m + b     (sums doubled: dot = K - 2 * acc)
//     ReLU: y < 0 -> +0 (FCMLT + BIC: -0.0 and NaN pass, as the reference)
//     post affine: y = y * pm + pb;  residual: y = y + r
// the driver's operations in its order, no fused multiply-add, so the same
// bits. GCC's loop keeps ~10 pointers per block in memory or recomputes
// them (~135 instructions a block with every step); here every load and
// store is post-indexed: the per-channel values (2 or 4 LDPs), kk (1 LDP and
// its step: a constant, or per block where padded taps were skipped), the
// sums (2 LD1s), per pixel a residual LDP, 18 operations and an STP, and 2
// for the loop (the sums' pointer against their end): 90 instructions a
// block.
// Registers: v0-v7 the sums, then y (pixel p: v[2p], v[2p+1]); v16-v23 m,
// b, pm, pb (2 each); v24, v25 kk; v26, v27 the residual; v28, v29 ReLU's.
#define LOWBIT_ST_RELU(Y, T)                          \
  "fcmlt " T ".4s, " Y ".4s, #0.0\n\t"                \
  "bic " Y ".16b, " Y ".16b, " T ".16b\n\t"
#define LOWBIT_ST_AFFINE(Y, PM, PB)                   \
  "fmul " Y ".4s, " Y ".4s, " PM ".4s\n\t"            \
  "fadd " Y ".4s, " Y ".4s, " PB ".4s\n\t"
#define LOWBIT_ST_RESIDUAL(Y, R) "fadd " Y ".4s, " Y ".4s, " R ".4s\n\t"
#define LOWBIT_ST_RESIDUAL_LOAD(X) "ldp q26, q27, [%[" X "]], #32\n\t"
#define LOWBIT_ST_NO1(A) ""
#define LOWBIT_ST_NO2(A, B) ""
#define LOWBIT_ST_NO3(A, B, C) ""
#define LOWBIT_ST_VEC(Y, KK, M, B, PM, PB, R, T, RELU, AFFINE, RESIDUAL)  \
  "sub " Y ".4s, " KK ".4s, " Y ".4s\n\t"                                \
  "scvtf " Y ".4s, " Y ".4s\n\t"                                         \
  "fmul " Y ".4s, " Y ".4s, " M ".4s\n\t"                                \
  "fadd " Y ".4s, " Y ".4s, " B ".4s\n\t"                                \
  RELU(Y, T) AFFINE(Y, PM, PB) RESIDUAL(Y, R)
#define LOWBIT_ST_PIXEL(Y0, Y1, Q0, Q1, OUT, RES, RELU, AFFINE, RESIDUAL, RES_LOAD)          \
  RES_LOAD(RES)                                                                              \
  LOWBIT_ST_VEC(Y0, "v24", "v16", "v18", "v20", "v22", "v26", "v28", RELU, AFFINE, RESIDUAL) \
  LOWBIT_ST_VEC(Y1, "v25", "v17", "v19", "v21", "v23", "v27", "v29", RELU, AFFINE, RESIDUAL) \
  "stp " Q0 ", " Q1 ", [%[" OUT "]], #32\n\t"
#define LOWBIT_ST_ASM(RELU, AFFINE, AFFINE_LOAD, RESIDUAL, RES_LOAD)                         \
  asm volatile(                                                                              \
      "0:\n\t"                                                                               \
      "ldp q16, q17, [%[mult]], #32\n\t"                                                     \
      "ldp q18, q19, [%[bias]], #32\n\t"                                                     \
      AFFINE_LOAD                                                                            \
      "ldp q24, q25, [%[kk]]\n\t"                                                            \
      "add %[kk], %[kk], %[kk_step]\n\t"                                                     \
      "ld1 {v0.4s, v1.4s, v2.4s, v3.4s}, [%[sums]], #64\n\t"                                 \
      "ld1 {v4.4s, v5.4s, v6.4s, v7.4s}, [%[sums]], #64\n\t"                                 \
      LOWBIT_ST_PIXEL("v0", "v1", "q0", "q1", "o0", "r0", RELU, AFFINE, RESIDUAL, RES_LOAD)             \
      LOWBIT_ST_PIXEL("v2", "v3", "q2", "q3", "o1", "r1", RELU, AFFINE, RESIDUAL, RES_LOAD)             \
      LOWBIT_ST_PIXEL("v4", "v5", "q4", "q5", "o2", "r2", RELU, AFFINE, RESIDUAL, RES_LOAD)             \
      LOWBIT_ST_PIXEL("v6", "v7", "q6", "q7", "o3", "r3", RELU, AFFINE, RESIDUAL, RES_LOAD)             \
      "cmp %[sums], %[sums_end]\n\t"                                                         \
      "b.ne 0b\n\t"                                                                          \
      : [sums] "+r"(sums), [mult] "+r"(mult), [bias] "+r"(bias), [pm] "+r"(post_mult),       \
        [pb] "+r"(post_bias), [kk] "+r"(kk), [o0] "+r"(o0), [o1] "+r"(o1), [o2] "+r"(o2),    \
        [o3] "+r"(o3), [r0] "+r"(r0), [r1] "+r"(r1), [r2] "+r"(r2), [r3] "+r"(r3)            \
      : [kk_step] "r"(kk_step_bytes), [sums_end] "r"(sums_end)                               \
      : "cc", "memory", "v0", "v1", "v2", "v3", "v4", "v5", "v6", "v7", "v16", "v17", "v18",  \
        "v19", "v20", "v21", "v22", "v23", "v24", "v25", "v26", "v27", "v28", "v29")
#define LOWBIT_ST_AFFINE_LOAD                         \
  "ldp q20, q21, [%[pm]], #32\n\t"                    \
  "ldp q22, q23, [%[pb]], #32\n\t"

// `blocks` (>= 1) whole blocks: sums[b] as Blocks4x8's, the per-channel
// values from mult, bias, post_mult, post_bias (8 floats a block), kk the
// first block's 2 vectors (the next block's kk_step_bytes further on: 0 for
// one kk for all), out[p] and residual[p] where pixel p's first block goes.
template <bool kRelu, bool kAffine, bool kResidual>
inline void StoreBlocks4x8(const uint32x4_t (*sums)[4][2], const float* mult, const float* bias,
                           const float* post_mult, const float* post_bias, const uint32x4_t* kk,
                           std::int64_t kk_step_bytes, float* const (&out)[4],
                           const float* const (&residual)[4], std::int64_t blocks) {
  float *o0 = out[0], *o1 = out[1], *o2 = out[2], *o3 = out[3];
  const float *r0 = residual[0], *r1 = residual[1], *r2 = residual[2], *r3 = residual[3];
  // The loop ends at the sums' end (asm takes 30 operands at most).
  const uint32x4_t(*const sums_end)[4][2] = sums + blocks;
  if constexpr (kRelu && kAffine && kResidual) {
    LOWBIT_ST_ASM(LOWBIT_ST_RELU, LOWBIT_ST_AFFINE, LOWBIT_ST_AFFINE_LOAD, LOWBIT_ST_RESIDUAL,
                  LOWBIT_ST_RESIDUAL_LOAD);
  } else if constexpr (kRelu && kAffine) {
    LOWBIT_ST_ASM(LOWBIT_ST_RELU, LOWBIT_ST_AFFINE, LOWBIT_ST_AFFINE_LOAD, LOWBIT_ST_NO2,
                  LOWBIT_ST_NO1);
  } else if constexpr (kRelu && kResidual) {
    LOWBIT_ST_ASM(LOWBIT_ST_RELU, LOWBIT_ST_NO3, "", LOWBIT_ST_RESIDUAL, LOWBIT_ST_RESIDUAL_LOAD);
  } else if constexpr (kRelu) {
    LOWBIT_ST_ASM(LOWBIT_ST_RELU, LOWBIT_ST_NO3, "", LOWBIT_ST_NO2, LOWBIT_ST_NO1);
  } else if constexpr (kAffine && kResidual) {
    LOWBIT_ST_ASM(LOWBIT_ST_NO2, LOWBIT_ST_AFFINE, LOWBIT_ST_AFFINE_LOAD, LOWBIT_ST_RESIDUAL,
                  LOWBIT_ST_RESIDUAL_LOAD);
  } else if constexpr (kAffine) {
    LOWBIT_ST_ASM(LOWBIT_ST_NO2, LOWBIT_ST_AFFINE, LOWBIT_ST_AFFINE_LOAD, LOWBIT_ST_NO2,
                  LOWBIT_ST_NO1);
  } else if constexpr (kResidual) {
    LOWBIT_ST_ASM(LOWBIT_ST_NO2, LOWBIT_ST_NO3, "", LOWBIT_ST_RESIDUAL, LOWBIT_ST_RESIDUAL_LOAD);
  } else {
    LOWBIT_ST_ASM(LOWBIT_ST_NO2, LOWBIT_ST_NO3, "", LOWBIT_ST_NO2, LOWBIT_ST_NO1);
  }
}
#undef LOWBIT_ST_AFFINE_LOAD
#undef LOWBIT_ST_ASM
#undef LOWBIT_ST_RESIDUAL_LOAD
#undef LOWBIT_ST_NO1
#undef LOWBIT_ST_PIXEL
#undef LOWBIT_ST_VEC
#undef LOWBIT_ST_NO3
#undef LOWBIT_ST_NO2
#undef LOWBIT_ST_RESIDUAL
#undef LOWBIT_ST_AFFINE
#undef LOWBIT_ST_RELU
#endif

#if !defined(__aarch64__)
// armv7's 2 x 4 tile in assembly, as Blocks4x8 for aarch64 (GCC's chunk loop
// took ~50 instructions a chunk, and 32-bit code around it spilled the
// accumulators per run). q8-q15 hold the accumulators (pixel p, channel c in
// q[8 + 4p + c]) for the whole tile; a chunk is 2 pixel loads, 4 channel
// loads (one pointer walking the channels by the stride, then stepped back
// by 3 * stride - 16 bytes), 24 vector operations (VEOR, VCNT, VPADAL per
// pixel and channel) and 3 for the loop: 33 instructions for 1,024 binary
// MACs. A run's last 2 words take the same 24 operations on d registers
// (64 bits), its last word those on zeroed d registers, 3 words both. The
// reduction: 16-bit pairwise adds to [c0 c1 c2 c3] per pixel, then widened
// and doubled (LOWBIT_V7_REDUCE).
struct Blocks2x4Args {
  const PackedWord* const* rows;
  const std::int64_t* offsets;  // read as their low words (offsets < 2^31)
  std::int32_t segments;
  const PackedWord* filter;     // block 0's; advanced by the assembly
  std::int32_t stride_bytes;
  std::int32_t words;
  std::uint32_t* out;           // sums[blocks][2][1] as 8 words each; advanced
  std::int32_t blocks;          // >= 1; counted down
  std::int32_t block_bytes;
  const std::uint8_t* zeros;    // 64 zero bytes
};
static_assert(sizeof(void*) == 4, "the armv7 assembly reads 32-bit fields");

// The 24 operations of one chunk on q0, q1 (pixels) and q2-q5 (channels).
#define LOWBIT_V7_OPS                                 \
  "veor q6, q0, q2\n\t"                               \
  "veor q7, q0, q3\n\t"                               \
  "vcnt.8 q6, q6\n\t"                                 \
  "vcnt.8 q7, q7\n\t"                                 \
  "vpadal.u8 q8, q6\n\t"                              \
  "vpadal.u8 q9, q7\n\t"                              \
  "veor q6, q0, q4\n\t"                               \
  "veor q7, q0, q5\n\t"                               \
  "vcnt.8 q6, q6\n\t"                                 \
  "vcnt.8 q7, q7\n\t"                                 \
  "vpadal.u8 q10, q6\n\t"                             \
  "vpadal.u8 q11, q7\n\t"                             \
  "veor q6, q1, q2\n\t"                               \
  "veor q7, q1, q3\n\t"                               \
  "vcnt.8 q6, q6\n\t"                                 \
  "vcnt.8 q7, q7\n\t"                                 \
  "vpadal.u8 q12, q6\n\t"                             \
  "vpadal.u8 q13, q7\n\t"                             \
  "veor q6, q1, q4\n\t"                               \
  "veor q7, q1, q5\n\t"                               \
  "vcnt.8 q6, q6\n\t"                                 \
  "vcnt.8 q7, q7\n\t"                                 \
  "vpadal.u8 q14, q6\n\t"                             \
  "vpadal.u8 q15, q7\n\t"
// Pixel p's accumulators A0-A3 (as d-register pairs) -> twice [c0 c1 c2 c3]
// stored at r1 (advanced): pairwise 16-bit adds, 8 lanes -> 4 -> 2 -> 1 per
// channel (a channel's sum is 8 lanes of <= 16 per chunk: <= 511 chunks,
// kAsmMaxChunks), then widened and doubled in one VSHLL.
#define LOWBIT_V7_REDUCE(A0L, A0H, A1L, A1H, A2L, A2H, A3L, A3H)  \
  "vpadd.i16 d0, " A0L ", " A0H "\n\t"                           \
  "vpadd.i16 d1, " A1L ", " A1H "\n\t"                           \
  "vpadd.i16 d2, " A2L ", " A2H "\n\t"                           \
  "vpadd.i16 d3, " A3L ", " A3H "\n\t"                           \
  "vpadd.i16 d0, d0, d1\n\t"                                     \
  "vpadd.i16 d1, d2, d3\n\t"                                     \
  "vpadd.i16 d0, d0, d1\n\t"                                     \
  "vshll.u16 q0, d0, #1\n\t"                                     \
  "vst1.32 {d0-d1}, [r1]!\n\t"

// The same 24 operations on d registers (half a chunk, 64 bits) into the
// accumulators' low halves: every lane of an armv7 accumulator belongs to
// one channel, so the half-width VPADAL needs no other layout.
#define LOWBIT_V7_OPS_D                               \
  "veor d12, d0, d4\n\t"                              \
  "veor d13, d0, d6\n\t"                              \
  "vcnt.8 d12, d12\n\t"                               \
  "vcnt.8 d13, d13\n\t"                               \
  "vpadal.u8 d16, d12\n\t"                            \
  "vpadal.u8 d18, d13\n\t"                            \
  "veor d12, d0, d8\n\t"                              \
  "veor d13, d0, d10\n\t"                             \
  "vcnt.8 d12, d12\n\t"                               \
  "vcnt.8 d13, d13\n\t"                               \
  "vpadal.u8 d20, d12\n\t"                            \
  "vpadal.u8 d22, d13\n\t"                            \
  "veor d12, d2, d4\n\t"                              \
  "veor d13, d2, d6\n\t"                              \
  "vcnt.8 d12, d12\n\t"                               \
  "vcnt.8 d13, d13\n\t"                               \
  "vpadal.u8 d24, d12\n\t"                            \
  "vpadal.u8 d26, d13\n\t"                            \
  "veor d12, d2, d8\n\t"                              \
  "veor d13, d2, d10\n\t"                             \
  "vcnt.8 d12, d12\n\t"                               \
  "vcnt.8 d13, d13\n\t"                               \
  "vpadal.u8 d28, d12\n\t"                            \
  "vpadal.u8 d30, d13\n\t"
// Two words of each pixel and channel (r0, r1 advanced when ADV is "!").
#define LOWBIT_V7_TWO_WORDS(ADV)                      \
  "vld1.32 {d0}, [r0]" ADV "\n\t"                     \
  "vld1.32 {d2}, [r1]" ADV "\n\t"                     \
  "vld1.32 {d4}, [r3], r12\n\t"                       \
  "vld1.32 {d6}, [r3], r12\n\t"                       \
  "vld1.32 {d8}, [r3], r12\n\t"                       \
  "vld1.32 {d10}, [r3]\n\t"                           \
  LOWBIT_V7_OPS_D
// One word of each pixel and channel (the channels' at r3, walking).
#define LOWBIT_V7_ONE_WORD                            \
  "vmov.i32 d0, #0\n\t"                               \
  "vmov.i32 d2, #0\n\t"                               \
  "vmov.i32 d4, #0\n\t"                               \
  "vmov.i32 d6, #0\n\t"                               \
  "vmov.i32 d8, #0\n\t"                               \
  "vmov.i32 d10, #0\n\t"                              \
  "vld1.32 {d0[0]}, [r0]\n\t"                         \
  "vld1.32 {d2[0]}, [r1]\n\t"                         \
  "vld1.32 {d4[0]}, [r3], r12\n\t"                    \
  "vld1.32 {d6[0]}, [r3], r12\n\t"                    \
  "vld1.32 {d8[0]}, [r3], r12\n\t"                    \
  "vld1.32 {d10[0]}, [r3]\n\t"                        \
  LOWBIT_V7_OPS_D
// The runs of a block for one value of words % 4 (labels L0 runs, L1
// chunks, L2 the run's end) with the tail TAIL: the branch on words % 4 is
// taken once per block, not once per run.
#define LOWBIT_V7_RUNS(L0, L1, L2, TAIL)              \
  L0 ":\n\t"                                          \
  "ldr r0, [r6], #4\n\t"                              \
  "ldr r1, [r6], #4\n\t"                              \
  "ldr r2, [r8], #8\n\t"                              \
  "add r3, r10, r2, lsl #2\n\t"                       \
  "lsrs r5, lr, #2\n\t"                               \
  "beq " L2 "f\n\t"                                   \
  L1 ":\n\t"                                          \
  "vld1.32 {d0-d1}, [r0]!\n\t"                        \
  "vld1.32 {d4-d5}, [r3], r12\n\t"                    \
  "vld1.32 {d6-d7}, [r3], r12\n\t"                    \
  "vld1.32 {d8-d9}, [r3], r12\n\t"                    \
  "vld1.32 {d10-d11}, [r3]\n\t"                       \
  "sub r3, r3, r4\n\t"                                \
  "vld1.32 {d2-d3}, [r1]!\n\t"                        \
  LOWBIT_V7_OPS                                       \
  "subs r5, r5, #1\n\t"                               \
  "bne " L1 "b\n\t"                                   \
  L2 ":\n\t"                                          \
  TAIL                                                \
  "subs r9, r9, #1\n\t"                               \
  "bne " L0 "b\n\t"                                   \
  "b 9f\n\t"

inline void Blocks2x4(Blocks2x4Args& args) {
  // r0, r1 pixels; r3 the channel pointer; r12 stride; r4 step back; r5
  // chunk count; r6 rows; r8 offsets; r9 runs left; r10 filter; lr words;
  // r2 scratch.
  asm volatile(
      "ldr r10, [%[args], #12]\n\t"
      "ldr r12, [%[args], #16]\n\t"
      "ldr lr, [%[args], #20]\n\t"
      "add r4, r12, r12, lsl #1\n\t"
      "sub r4, r4, #16\n\t"
      "0:\n\t"  // a block: its runs from the first, its accumulators from zero
      "ldr r6, [%[args], #0]\n\t"
      "ldr r8, [%[args], #4]\n\t"
      "ldr r9, [%[args], #8]\n\t"
      "ldr r3, [%[args], #36]\n\t"
      "vld1.64 {d16-d19}, [r3]\n\t"
      "vld1.64 {d20-d23}, [r3]\n\t"
      "vld1.64 {d24-d27}, [r3]\n\t"
      "vld1.64 {d28-d31}, [r3]\n\t"
      "ands r2, lr, #3\n\t"
      "beq 10f\n\t"
      "cmp r2, #2\n\t"
      "blt 20f\n\t"
      "beq 30f\n\t"
      "b 40f\n\t"
      LOWBIT_V7_RUNS("10", "11", "12", "")
      LOWBIT_V7_RUNS("20", "21", "22", LOWBIT_V7_ONE_WORD)
      LOWBIT_V7_RUNS("30", "31", "32", LOWBIT_V7_TWO_WORDS(""))
      LOWBIT_V7_RUNS("40", "41", "42", LOWBIT_V7_TWO_WORDS("!") "sub r3, r3, r4\n\t"
                     "sub r3, r3, #8\n\t" LOWBIT_V7_ONE_WORD)
      "9:\n\t"
      "ldr r1, [%[args], #24]\n\t"
      LOWBIT_V7_REDUCE("d16", "d17", "d18", "d19", "d20", "d21", "d22", "d23")
      LOWBIT_V7_REDUCE("d24", "d25", "d26", "d27", "d28", "d29", "d30", "d31")
      "str r1, [%[args], #24]\n\t"
      "ldr r2, [%[args], #32]\n\t"
      "add r10, r10, r2\n\t"
      "ldr r2, [%[args], #28]\n\t"
      "subs r2, r2, #1\n\t"
      "str r2, [%[args], #28]\n\t"
      "bne 0b\n\t"
      :
      : [args] "r"(&args)
      : "cc", "memory", "r0", "r1", "r2", "r3", "r4", "r5", "r6", "r8", "r9", "r10", "r12",
        "lr", "d0", "d1", "d2", "d3", "d4", "d5", "d6", "d7", "d8", "d9", "d10", "d11", "d12",
        "d13", "d14", "d15", "d16", "d17", "d18", "d19", "d20", "d21", "d22", "d23", "d24",
        "d25", "d26", "d27", "d28", "d29", "d30", "d31");
}
#undef LOWBIT_V7_RUNS
#undef LOWBIT_V7_ONE_WORD
#undef LOWBIT_V7_TWO_WORDS
#undef LOWBIT_V7_OPS_D
#undef LOWBIT_V7_REDUCE
#undef LOWBIT_V7_OPS
#endif

struct Neon {
  using IVec = uint32x4_t;
  using FVec = float32x4_t;
  static constexpr int kLanes = 4;
  static constexpr int kBlockWidth = kNeonBlockWidth;  // C
  static constexpr int kBlockVectors = kBlockWidth / kLanes;
  static constexpr int kTilePixels = kNeonTilePixels;  // P
  static constexpr int kAccumulators = kBlockWidth / kPairsShareAccumulator;

  static IVec Zero() { return vdupq_n_u32(0); }
  static IVec Load(const void* p) { return vld1q_u32(static_cast<const std::uint32_t*>(p)); }
  static IVec Set32(std::int32_t v) { return vdupq_n_u32(static_cast<std::uint32_t>(v)); }
  static IVec Add32(IVec a, IVec b) { return vaddq_u32(a, b); }
  static IVec Sub32(IVec a, IVec b) { return vsubq_u32(a, b); }

  // NEON has no masked loads or stores: a partial vector (only the last
  // channel block of a layer) moves lane by lane. Not through a stack buffer:
  // the compiler makes that a memcpy call, and every vector live across a
  // call is spilled.
  static FVec LoadF(const float* p, int n) {
    if (n >= kLanes) return vld1q_f32(p);
    FVec v = vdupq_n_f32(0.0f);
    v = vld1q_lane_f32(p, v, 0);
    if (n > 1) v = vld1q_lane_f32(p + 1, v, 1);
    if (n > 2) v = vld1q_lane_f32(p + 2, v, 2);
    return v;
  }
  static void StoreF(float* p, FVec v, int n) {
    if (n >= kLanes) {
      vst1q_f32(p, v);
      return;
    }
    vst1q_lane_f32(p, v, 0);
    if (n > 1) vst1q_lane_f32(p + 1, v, 1);
    if (n > 2) vst1q_lane_f32(p + 2, v, 2);
  }
  // Whole blocks of a full aarch64 tile take StoreBlocks4x8 (the driver's
  // RunTileBlocks stores the rest itself): the sums, per-channel values, kk
  // (kk_step vectors on per block) and pointers as StoreBlocks4x8's.
  template <int Q>
  static constexpr bool kStoresBlocks =
#if defined(__aarch64__)
      Q == 4 && kBlockWidth == 8;
#else
      false;
#endif
  template <int Q, bool kRelu, bool kAffine, bool kResidual>
  static void StoreBlocks(const IVec (*sums)[Q][kBlockVectors], const float* mult,
                          const float* bias, const float* post_mult, const float* post_bias,
                          const IVec* kk, std::int64_t kk_step, float* const (&out)[Q],
                          const float* const (&residual)[Q], std::int64_t blocks) {
#if defined(__aarch64__)
    if constexpr (kStoresBlocks<Q>) {
      StoreBlocks4x8<kRelu, kAffine, kResidual>(sums, mult, bias, post_mult, post_bias, kk,
                                                kk_step * sizeof(IVec), out, residual, blocks);
    }
#endif
  }
  // The filter's layout within a block for `words` words per pixel (see
  // NeonWordPairs): the driver hands it to AccumulateBlocks.
  static bool WordPairs(std::int64_t words) { return NeonWordPairs(words); }
  static FVec ToFloat(IVec a) { return vcvtq_f32_s32(vreinterpretq_s32_u32(a)); }
  static FVec MulF(FVec a, FVec b) { return vmulq_f32(a, b); }
  static FVec AddF(FVec a, FVec b) { return vaddq_f32(a, b); }
  // The ReLU, as the reference's `if (y < 0) y = 0`: -0.0 and NaN pass
  // through unchanged (VMAX would turn them around).
  static FVec Relu(FVec y) {
#if defined(__aarch64__)
    return vbslq_f32(vcltq_f32(y, vdupq_n_f32(0.0f)), vdupq_n_f32(0.0f), y);
#else
    // GCC for armv7 makes NEON float compares scalar (see bitpack_neon.cc):
    // y < 0 on the bit pattern u instead. The negative numbers other than
    // -0.0 are u in [0x80000001, 0xff800000] (subnormals, normals, -inf; NaN
    // lie above), i.e. (signed) u - 1 <= -0x00800001.
    const int32x4_t u = vreinterpretq_s32_f32(y);
    const uint32x4_t negative =
        vcleq_s32(vsubq_s32(u, vdupq_n_s32(1)), vdupq_n_s32(-0x00800001));
    return vreinterpretq_f32_u32(vbicq_u32(vreinterpretq_u32_f32(y), negative));
#endif
  }

  // One chunk of the tile: acc[p][a] gains the popcounts of x[p] XOR w[c]
  // (see the top of this file for the accumulator layout), for the
  // accumulators [A0, A1) (all by default).
  template <int Q, int A0 = 0, int A1 = kAccumulators>
  static inline void Chunk(const uint8x16_t (&x)[Q], const uint8x16_t (&w)[kBlockWidth],
                           uint16x8_t (&acc)[Q][kAccumulators]) {
    LOWBIT_NEON_UNROLL
    for (int p = 0; p < Q; ++p) {
      LOWBIT_NEON_UNROLL
      for (int a = A0; a < A1; ++a) {
#if defined(__aarch64__)
        const uint8x16_t n0 = vcntq_u8(veorq_u8(x[p], w[2 * a]));
        const uint8x16_t n1 = vcntq_u8(veorq_u8(x[p], w[2 * a + 1]));
        acc[p][a] = vpadalq_u8(acc[p][a], vpaddq_u8(n0, n1));
#else
        acc[p][a] = vpadalq_u8(acc[p][a], vcntq_u8(veorq_u8(x[p], w[a])));
#endif
      }
    }
  }

  // The 16-bit sums of one pixel as kBlockVectors vectors of 4 channels.
  static inline void Reduce(const uint16x8_t (&acc)[kAccumulators], IVec (&out)[kBlockVectors]) {
    LOWBIT_NEON_UNROLL
    for (int v = 0; v < kBlockVectors; ++v) {
#if defined(__aarch64__)
      // acc[2v]: channels 4v, 4v+1; acc[2v+1]: 4v+2, 4v+3 (lanes 0-3, 4-7).
      out[v] = vpaddq_u32(vpaddlq_u16(acc[2 * v]), vpaddlq_u16(acc[2 * v + 1]));
#else
      uint32x2_t sums[4];  // [c] = the two half sums of channel 4v + c
      for (int c = 0; c < 4; ++c) {
        const uint32x4_t wide = vpaddlq_u16(acc[4 * v + c]);
        sums[c] = vpadd_u32(vget_low_u32(wide), vget_high_u32(wide));
      }
      out[v] = vcombine_u32(vpadd_u32(sums[0], sums[1]), vpadd_u32(sums[2], sums[3]));
#endif
    }
  }

  // The micro-kernel in intrinsics: Q pixels x kBlockWidth channels over
  // `segments` runs of `words` words; run s of pixel p starts at
  // rows[s * Q + p], of channel c at filter + c * channel_stride +
  // filter_offsets[s] (word_pairs: the word-pair layout, NeonWordPairs, its
  // group c / 4 at filter + 4 * (c / 4 * channel_stride + filter_offsets[s])).
  // sums[p][v] = twice the popcount sums of pixel p,
  // channels 4v..4v+3 (the output transform wants K - 2 * sum).
  template <int Q>
  static void AccumulateTile(const PackedWord* const* rows, std::int64_t segments,
                             std::int64_t words, const PackedWord* filter,
                             const std::int64_t* filter_offsets, std::int64_t channel_stride,
                             bool word_pairs, IVec (&sums)[Q][kBlockVectors]) {
    constexpr int C = kBlockWidth;
    uint16x8_t acc[Q][kAccumulators];
    IVec total[Q][kBlockVectors];
    LOWBIT_NEON_UNROLL
    for (int p = 0; p < Q; ++p) {
      LOWBIT_NEON_UNROLL
      for (int a = 0; a < kAccumulators; ++a) acc[p][a] = vdupq_n_u16(0);
      LOWBIT_NEON_UNROLL
      for (int v = 0; v < kBlockVectors; ++v) total[p][v] = Zero();
    }
    auto fold = [&] {
      LOWBIT_NEON_UNROLL
      for (int p = 0; p < Q; ++p) {
        IVec sums[kBlockVectors];
        Reduce(acc[p], sums);
        LOWBIT_NEON_UNROLL
        for (int v = 0; v < kBlockVectors; ++v) total[p][v] = Add32(total[p][v], sums[v]);
        LOWBIT_NEON_UNROLL
        for (int a = 0; a < kAccumulators; ++a) acc[p][a] = vdupq_n_u16(0);
      }
    };
#if defined(__aarch64__)
    // Words [j, end) of run s on the word-pair layout (word_pairs: even
    // channel words, see NeonWordPairs, so j and end are even too): whole
    // chunks, then the last 2 words.
    auto pair_run = [&](std::int64_t s, std::int64_t j, std::int64_t end) LOWBIT_NEON_INLINE {
      constexpr int G = C / kNeonPairGroup;
      const PackedWord* x[Q];
      const PackedWord* wg[G];  // the groups' words at 4 x the word offset
      LOWBIT_NEON_UNROLL
      for (int p = 0; p < Q; ++p) x[p] = rows[s * Q + p] + j;
      LOWBIT_NEON_UNROLL
      for (int g = 0; g < G; ++g) {
        wg[g] = filter + g * kNeonPairGroup * channel_stride +
                kNeonPairGroup * (filter_offsets[s] + j);
      }
      for (std::int64_t chunks = (end - j) / 4; chunks > 0; --chunks) {
        uint8x16_t xv[Q], wv[C];
        LOWBIT_NEON_UNROLL
        for (int p = 0; p < Q; ++p) {
          xv[p] = vreinterpretq_u8_u32(vld1q_u32(x[p]));
          x[p] += 4;
        }
        // A group's operations right after its LD4: GCC then gives both
        // LD4s the same 4 registers without copying the first group's out.
        auto group = [&](auto g_c) LOWBIT_NEON_INLINE {
          constexpr int g = decltype(g_c)::value;
          constexpr int kGroupAccumulators = kNeonPairGroup / 2;
          const uint64x2x4_t four = vld4q_u64(reinterpret_cast<const std::uint64_t*>(wg[g]));
          LOWBIT_NEON_UNROLL
          for (int i = 0; i < kNeonPairGroup; ++i) {
            wv[kNeonPairGroup * g + i] = vreinterpretq_u8_u64(four.val[i]);
          }
          wg[g] += 4 * kNeonPairGroup;
          Chunk<Q, g * kGroupAccumulators, (g + 1) * kGroupAccumulators>(xv, wv, acc);
        };
        static_assert(G == 2, "aarch64: 8 channels, 2 groups");
        group(std::integral_constant<int, 0>{});
        group(std::integral_constant<int, 1>{});
      }
      if ((end - j) % 4 == 0) return;
      // The last 2 words: channel pairs side by side as stored (see run's
      // half chunk below).
      uint8x16_t xv[Q], wv[C / 2];
      LOWBIT_NEON_UNROLL
      for (int p = 0; p < Q; ++p) xv[p] = vreinterpretq_u8_u64(vdupq_n_u64(LoadHalf(x[p], 2)));
      LOWBIT_NEON_UNROLL
      for (int a = 0; a < C / 2; ++a) {
        wv[a] = vreinterpretq_u8_u32(vld1q_u32(wg[a / 2] + 4 * (a % 2)));
      }
      LOWBIT_NEON_UNROLL
      for (int p = 0; p < Q; ++p) {
        LOWBIT_NEON_UNROLL
        for (int a = 0; a < C / 2; ++a) {
          acc[p][a] = vpadalq_u8(acc[p][a], vcntq_u8(veorq_u8(xv[p], wv[a])));
        }
      }
    };
#endif
    // Words [j, end) of run s: whole chunks, then the last 1-3 words.
    auto run = [&](std::int64_t s, std::int64_t j, std::int64_t end) LOWBIT_NEON_INLINE {
#if defined(__aarch64__)
      if (word_pairs) {
        pair_run(s, j, end);
        return;
      }
#else
      static_cast<void>(word_pairs);  // always false: armv7 keeps the plain layout
#endif
      // One pointer per pixel and channel, stepped by whole chunks (post-
      // indexed loads, no address arithmetic per chunk).
      const PackedWord* x[Q];
      const PackedWord* wc[C];
      LOWBIT_NEON_UNROLL
      for (int p = 0; p < Q; ++p) x[p] = rows[s * Q + p] + j;
      const PackedWord* w = filter + filter_offsets[s] + j;
      LOWBIT_NEON_UNROLL
      for (int c = 0; c < C; ++c) wc[c] = w + c * channel_stride;
      std::int64_t chunks = (end - j) / 4;
      for (; chunks > 0; --chunks) {
        uint8x16_t xv[Q], wv[C];
        LOWBIT_NEON_UNROLL
        for (int p = 0; p < Q; ++p) {
          xv[p] = vreinterpretq_u8_u32(vld1q_u32(x[p]));
          x[p] += 4;
        }
        LOWBIT_NEON_UNROLL
        for (int c = 0; c < C; ++c) {
          wv[c] = vreinterpretq_u8_u32(vld1q_u32(wc[c]));
          wc[c] += 4;
        }
        Chunk<Q>(xv, wv, acc);
      }
      // x[p] and wc[c] now point at the run's last (end - j) % 4 words.
      const std::int64_t tail = (end - j) % 4;
      if (tail == 0) return;
#if defined(__aarch64__)
      if (tail <= 2) {
        // Half a chunk: the 64 bits of two channels share one register, the
        // pixel's 64 bits are in both halves; EOR, CNT and UADALP then land
        // channel 2a in lanes 0-3 and 2a+1 in lanes 4-7, the accumulator's
        // layout, with no ADDP: half the operations of a whole chunk.
        uint8x16_t xv[Q], wv[C / 2];
        LOWBIT_NEON_UNROLL
        for (int p = 0; p < Q; ++p) xv[p] = vreinterpretq_u8_u64(vdupq_n_u64(LoadHalf(x[p], tail)));
        LOWBIT_NEON_UNROLL
        for (int a = 0; a < C / 2; ++a) {
          wv[a] = vreinterpretq_u8_u64(
              vcombine_u64(vcreate_u64(LoadHalf(wc[2 * a], tail)),
                           vcreate_u64(LoadHalf(wc[2 * a + 1], tail))));
        }
        LOWBIT_NEON_UNROLL
        for (int p = 0; p < Q; ++p) {
          LOWBIT_NEON_UNROLL
          for (int a = 0; a < C / 2; ++a) {
            acc[p][a] = vpadalq_u8(acc[p][a], vcntq_u8(veorq_u8(xv[p], wv[a])));
          }
        }
        return;
      }
#endif
      uint8x16_t xv[Q], wv[C];
      LOWBIT_NEON_UNROLL
      for (int p = 0; p < Q; ++p) xv[p] = vreinterpretq_u8_u32(LoadPartial(x[p], tail));
      LOWBIT_NEON_UNROLL
      for (int c = 0; c < C; ++c) wv[c] = vreinterpretq_u8_u32(LoadPartial(wc[c], tail));
      Chunk<Q>(xv, wv, acc);
    };
    // Chunks per run (a partial one counts as one: it adds no more per lane).
    const std::int64_t run_chunks = (words + 3) / 4;
    bool folded = false;
    if (segments * run_chunks <= kMaxChunks) {
      for (std::int64_t s = 0; s < segments; ++s) run(s, 0, words);
    } else {
      // Long receptive fields: fold the 16-bit sums every kMaxChunks chunks.
      std::int64_t budget = kMaxChunks;
      for (std::int64_t s = 0; s < segments; ++s) {
        for (std::int64_t j = 0; j < words;) {
          const std::int64_t chunks_left = (words - j + 3) / 4;
          const std::int64_t n = chunks_left < budget ? chunks_left : budget;
          const std::int64_t end = j + 4 * n < words ? j + 4 * n : words;
          run(s, j, end);
          j = end;
          budget -= n;
          if (budget == 0) {
            fold();
            folded = true;
            budget = kMaxChunks;
          }
        }
      }
    }
    LOWBIT_NEON_UNROLL
    for (int p = 0; p < Q; ++p) {
      Reduce(acc[p], sums[p]);
      LOWBIT_NEON_UNROLL
      for (int v = 0; v < kBlockVectors; ++v) {
        if (folded) sums[p][v] = Add32(sums[p][v], total[p][v]);
        sums[p][v] = Add32(sums[p][v], sums[p][v]);  // doubled, as the assembly's
      }
    }
  }

  // The micro-kernel over `blocks` consecutive channel blocks (block b's
  // filter at filter + b * block_words): sums[b] as AccumulateTile's. The
  // full tiles take the assembly, which loops over the blocks itself.
  template <int Q>
  static void AccumulateBlocks(const PackedWord* const* rows, std::int64_t segments,
                               std::int64_t words, const PackedWord* filter,
                               std::int64_t block_words, const std::int64_t* filter_offsets,
                               std::int64_t channel_stride, bool word_pairs,
                               std::int64_t blocks, IVec (*sums)[Q][kBlockVectors]) {
    constexpr std::int64_t kWordBytes = sizeof(PackedWord);
#if defined(__aarch64__)
    if constexpr (Q == 4 && kBlockWidth == 8) {
      if (segments > 0 && segments * (words / 4 + 2) <= kAsmMaxChunks) {
        Blocks4x8(rows, segments, words, filter, block_words * kWordBytes, filter_offsets,
                  channel_stride * kWordBytes, word_pairs, blocks, sums);
        return;
      }
    }
#else
    if constexpr (Q == 2 && kBlockWidth == 4) {
      if (segments > 0 && segments * (words / 4 + 1) <= kAsmMaxChunks) {
        Blocks2x4Args args{rows,
                           filter_offsets,
                           static_cast<std::int32_t>(segments),
                           filter,
                           static_cast<std::int32_t>(channel_stride * kWordBytes),
                           static_cast<std::int32_t>(words),
                           &sums[0][0][0][0],
                           static_cast<std::int32_t>(blocks),
                           static_cast<std::int32_t>(block_words * kWordBytes),
                           kZeroBlock};
        Blocks2x4(args);
        return;
      }
    }
#endif
    for (std::int64_t b = 0; b < blocks; ++b) {
      AccumulateTile<Q>(rows, segments, words, filter + b * block_words, filter_offsets,
                        channel_stride, word_pairs, sums[b]);
    }
  }
};

}  // namespace

void BConv2DNeon(const SimdConvArgs& args, ParallelExecutor& executor) {
  BConv2DChannelMajor<Neon>(args, executor);
}

}  // namespace lowbit

#undef LOWBIT_NEON_UNROLL
#undef LOWBIT_NEON_INLINE

#endif  // LOWBIT_NEON_SIMD
