// The binary depthwise convolution (core/bdepthwise.h) with AVX-512 F + BW,
// tiled over pixels and channels at once. Built with -mavx512f -mavx512bw
// (custom_ops/CMakeLists.txt); only entered after SelectBConv2DKernel saw
// AVX-512 BW at run time. Kernels with more than 63 taps (and extreme row
// sizes or strides, see BDepthwiseRowsAvx512) go to the AVX2 rows.
//
// Why a second kernel. The rows of core/bdepthwise_rows.h work per output
// pixel and 64 channels: gather the pixel's taps, count, read the counts out
// and transform them, a fixed cost of ~100 instructions whatever the channel
// count, so a 64-channel layer ran at a third of float speed. Here one output
// row is one flat bit stream, and so is each tap's view of the input:
//
//   Flat words. Output pixel ox, packed word w (of `words` per pixel) is flat
//   word j = ox * words + w of the output row. Tap (ky, kx) reads, for it, word
//   w of the padded input pixel q = ox * stride + kx * dilation of input row
//   iy = oy * stride_h - pad_top + ky * dilation_h. Split that padded row into
//   `stride` phases, phase r holding pixels q = stride * m + r in order (zero
//   bits for padding): the tap reads phase r = (kx * dilation) % stride at
//   pixel m = ox + (kx * dilation) / stride, i.e. flat word j + d * words of
//   that phase with d = (kx * dilation) / stride. So for every tap the output
//   row's bits come from one contiguous run of words, and 16 words (one zmm:
//   8 pixels of 64 channels, or 2 pixels of 256, or 16 of 32) are XORed with
//   the tap's filter words (repeated along the row, once per call) in one
//   instruction, whatever the channel count or stride.
//
//   Counting. Every bit is an independent lane: lane b of a zmm is one
//   (pixel, channel). The taps' mismatch vectors are summed as 1-bit numbers
//   by a carry-save adder tree (vpternlogq: sum = a^b^c, carry = majority),
//   giving the count's bits in planes: plane p = bit p of the 512 lanes'
//   counts. 9 taps take 5 full and 2 half adders (14 instructions) against 63
//   for a ripple add per tap.
//
//   Read-out. For each 64-bit quarter of the planes (64 lanes), a masked byte
//   add of 2^p under the mask plane p (vpaddb with k = plane p) puts the 64
//   counts in bytes, and D = K - 2 * count in signed bytes (|D| <= 63).
//
//   Borders. Padded pixels are zero bits (+1) in the phase rows: right for
//   pad_value 1 and VALID. For pad_value 0 a padded tap must contribute 0
//   instead: a whole padded tap row is skipped, and for a padded column the
//   count includes the tap's filter bit (x = +1 mismatches w = -1), so
//       D = K_used - 2 * (count - corr),  corr = sum of the padded taps'
//   filter bits, per pixel and channel. The kernel reads D = base - 2 * count
//   with base = K_used + 2 * corr (<= 2 * taps <= 126, one signed byte) from a
//   per-row table of bytes, one per set of used tap rows (a layer has at most
//   2 * kernel_h + 1 of them: the interior rows and a few at each border),
//   built with the plan.
//
//   Float input. With depth multiplier 1 and whole words of channels the
//   kernel binarises the float input itself: an input row is binarised
//   straight into its phase rows when an output row first needs it
//   (SplitRow: phase r's pixel m is input pixel stride * m + r - pad_left,
//   read at that address), one pass over the floats with nothing written but
//   the bits. The sign test is the packer's (NegativeBits16Avx512: vcmpps,
//   port 5, one per 16 floats: the float input's floor, one cycle per 64
//   bytes); the four masks of 64 channels go to general registers (kmovw,
//   port 0) and out as one 64-bit store, a quarter of the stores of one per
//   mask. Those stores matter: they retire in order behind the float output's
//   stores, which wait for their lines from L2, and with 16-bit stores the
//   packer took twice its time alone (56x56x64, stride 1).
//
//   Plan. Everything above that depends only on the layer (the filter taps
//   repeated along a row, the thresholds as bytes, the base tables and the
//   bit-packed output's count limits, a zero input row) is built once into a
//   DepthwiseAvx512Plan, which a BDepthwisePlan keeps (core/bdepthwise.h);
//   a call only splits input rows and counts.
//
//   Output. Float: D to int32 and float, times the multiplier, plus the bias
//   (two roundings, no FMA, as the reference), max(0, y) for ReLU (keeping
//   -0.0 as the scalar `y < 0 ? 0 : y` does), masked for the channels past the
//   last. On Zen 4 (AMD EPYC, 1 thread, 56x56x64 stride 1) the float output
//   costs ~20 us over the bit-packed one, 2.5x the time of writing its 800 KB
//   once; each 512-bit op there takes two of the four FP pipes' slots, and
//   what was tried instead ran no faster: a vpermb (VBMI) of D's bytes into
//   the low bytes of 2^23's float bits, then one subtraction, for the
//   sign extension and conversion (+15%); 256-bit conversions and stores
//   (+18%). Bit-packed: D < threshold compared in signed bytes, the thresholds
//   clamped to [-64, 64] (exact: |D| <= 63), then XOR flip; padding channels
//   get threshold -128 (never below) and flip 0, so their bits are 0.
#include "custom_ops/core/bdepthwise_kernels.h"

#include "custom_ops/core/bitpack_kernels.h"
#include "custom_ops/core/scratch.h"

#if LOWBIT_X86_SIMD
#if !defined(__AVX512F__) || !defined(__AVX512BW__)
#error "bdepthwise_avx512.cc must be compiled with -mavx512f -mavx512bw"
#endif

#include <immintrin.h>

#include <cstdint>
#include <cstring>

// GCC 12's AVX-512 intrinsics start their results from _mm512_undefined_*(),
// a self-initialised variable, which -Wmaybe-uninitialized reports at every
// inlined use (conversions, lane extracts): false positives, silenced here.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace lowbit {
namespace {

using i64 = std::int64_t;
constexpr i64 kVecWords = 16;     // 32-bit words per zmm
constexpr i64 kMaxFastTaps = 63;  // counts <= 63: six planes, one signed byte for D
constexpr int kMaxPlanes = 6;
constexpr i64 kMaxFastStride = 8;               // phases per input row
constexpr i64 kMaxFastRowWords = i64{1} << 16;  // words of an input or output row

struct alignas(64) Line {
  std::uint8_t bytes[64];
};

// Pieces of one block of memory, each 64-byte aligned: a thread's lines (they
// hold what an earlier call left there: each user writes every part it reads
// for data, the lanes past a row's end aside, which no output takes), or a
// plan's storage.
class Arena {
 public:
  // The calling thread's memory for its rows' input copies (core/scratch.h),
  // kept from one call to the next: a call of a small layer takes ~1 us, and
  // an allocation, its zeroing and glibc's consolidation of the previous
  // call's frees were a tenth of that.
  explicit Arena(i64 bytes)
      : storage_(static_cast<Line*>(ScratchBytes(ScratchSlot::kDepthwiseRows, bytes + 64))) {}
  explicit Arena(void* storage) : storage_(static_cast<Line*>(storage)) {}
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;
  // `count` elements of T.
  template <typename T>
  T* Take(i64 count) {
    T* piece = reinterpret_cast<T*>(reinterpret_cast<std::uint8_t*>(storage_) + used_);
    used_ += Size<T>(count);
    return piece;
  }
  // Bytes Take<T>(count) uses.
  template <typename T>
  static i64 Size(i64 count) {
    return (count * static_cast<i64>(sizeof(T)) + 63) / 64 * 64;
  }

 private:
  Line* const storage_;  // 64-byte aligned (the thread's scratch, or the plan's)
  i64 used_ = 0;
};

// `pixels` pixels of `words` words each, read every `step` words, written
// densely: whole pixels in the widest moves `words` allows (a word-by-word
// loop of run-time length costs about ten cycles per pixel).
void CopyStrided(const PackedWord* from, i64 step, PackedWord* to, i64 words, i64 pixels) {
  // One vector per pixel (256 or 512 channels) first: no inner loop.
  if (words == 16) {
    for (i64 i = 0; i < pixels; ++i, from += step, to += 16) {
      _mm512_storeu_si512(to, _mm512_loadu_si512(from));
    }
  } else if (words == 8) {
    for (i64 i = 0; i < pixels; ++i, from += step, to += 8) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(to),
                          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(from)));
    }
  } else if (words % 16 == 0) {
    for (i64 i = 0; i < pixels; ++i, from += step, to += words) {
      for (i64 w = 0; w < words; w += 16) _mm512_storeu_si512(to + w, _mm512_loadu_si512(from + w));
    }
  } else if (words % 8 == 0) {
    for (i64 i = 0; i < pixels; ++i, from += step, to += words) {
      for (i64 w = 0; w < words; w += 8) {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(to + w),
                            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(from + w)));
      }
    }
  } else if (words == 4) {
    for (i64 i = 0; i < pixels; ++i, from += step, to += 4) {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(to),
                       _mm_loadu_si128(reinterpret_cast<const __m128i*>(from)));
    }
  } else if (words == 2) {
    for (i64 i = 0; i < pixels; ++i, from += step, to += 2) std::memcpy(to, from, 8);
  } else if (words == 1) {
    for (i64 i = 0; i < pixels; ++i, from += step) to[i] = *from;
  } else {
    for (i64 i = 0; i < pixels; ++i, from += step, to += words) {
      std::memcpy(to, from, static_cast<std::size_t>(words) * sizeof(PackedWord));
    }
  }
}

// CopyStrided for a float input: `pixels` pixels of 32 * `words` floats each,
// read every `step` floats, binarised (NegativeBits16Avx512) into `words`
// words each, written densely. The compares' masks are joined in general
// registers (kmovw to a register is port 0, the compare port 5; joining them
// with kunpck would take port 5 too) and stored 64 bits at a time, for the
// reason the header's "Float input" gives.
__attribute__((always_inline)) inline std::uint64_t NegativeBits64(const float* from) {
  const std::uint64_t b0 = _cvtmask16_u32(NegativeBits16Avx512(from));
  const std::uint64_t b1 = _cvtmask16_u32(NegativeBits16Avx512(from + 16));
  const std::uint64_t b2 = _cvtmask16_u32(NegativeBits16Avx512(from + 32));
  const std::uint64_t b3 = _cvtmask16_u32(NegativeBits16Avx512(from + 48));
  return b0 | b1 << 16 | b2 << 32 | b3 << 48;
}

void PackStrided(const float* from, i64 step, PackedWord* to, i64 words, i64 pixels) {
  if (words == 2) {  // 64 channels, the common case: one store per pixel
    for (i64 i = 0; i < pixels; ++i, from += step, to += 2) {
      const std::uint64_t bits = NegativeBits64(from);
      std::memcpy(to, &bits, sizeof(bits));  // little-endian: word 0 low
    }
    return;
  }
  for (i64 i = 0; i < pixels; ++i, from += step) {
    i64 w = 0;
    for (; w + 2 <= words; w += 2, to += 2) {
      const std::uint64_t bits = NegativeBits64(from + 32 * w);
      std::memcpy(to, &bits, sizeof(bits));
    }
    if (w < words) {  // an odd last word
      *to++ = _cvtmask16_u32(NegativeBits16Avx512(from + 32 * w)) |
              _cvtmask16_u32(NegativeBits16Avx512(from + 32 * w + 16)) << 16;
    }
  }
}

// At most 2 * kernel_h + 1 sets of used tap rows (bdepthwise_avx512.cc
// header): the first used row and the last one each move down monotonically
// with the output row, through at most kernel_h + 1 values each.
constexpr i64 kMaxKeys = 2 * kMaxFastTaps + 1;

}  // namespace

// The sizes of a layer and what its calls only read (see the header comment),
// at the start of the storage a BDepthwisePlan owns, the tables after it.
struct DepthwiseAvx512Plan {
  i64 words;         // packed words per pixel (input after channel expansion, output)
  i64 channels;      // output channels
  i64 taps;          // kernel_h * kernel_w
  i64 row_words;     // out_w * words: words of one output row
  i64 group_words;   // row_words rounded up to whole zmm
  i64 phase_pixels;  // pixels of one phase row
  i64 phase_words;   // words of one phase row, with a zmm of zero slack
  i64 slot_words;    // one input row, all its phases
  // Per phase r: its pixels m in [phase_lo[r], phase_hi[r]) are inside the
  // input (ix = stride * m + r - pad_left in [0, in_w)), the others padding.
  i64 phase_lo[kMaxFastStride];
  i64 phase_hi[kMaxFastStride];
  int planes;        // bits of the largest count (taps)
  // Per kx: the offset of its stream in an input row's phase rows (phase
  // (kx * dilation) % stride, pixel (kx * dilation) / stride).
  i64 tap_offset[kMaxFastTaps];
  const PackedWord* filter_rows;  // [taps][group_words]: tap words along the row
  const std::int8_t* thresholds;  // [group_words * 32] (bit-packed output), else null
  const PackedWord* flips;        // [group_words] (bit-packed output), else null
  const PackedWord* zero_slot;    // [slot_words] zeros: the phases of a padding row
  // The sets of used tap rows (bit ky) the output rows have, and per set its
  // table of D's base, K_used + 2 * corr per flat word's 32 channels
  // ([key_count][base_bytes]), and for a bit-packed output the P bit planes
  // of every lane's count limit tau per zmm group, then its `never` plane
  // ([key_count][limit_words], BuildLimits).
  i64 key_count;
  std::uint64_t keys[kMaxKeys];
  i64 base_bytes;
  i64 limit_words;
  const std::int8_t* bases;
  const std::uint64_t* limits;
};

namespace {

using Plan = DepthwiseAvx512Plan;

inline __m512i Load(const PackedWord* p) { return _mm512_loadu_si512(p); }

inline void FullAdd(__m512i a, __m512i b, __m512i c, __m512i* sum, __m512i* carry) {
  *sum = _mm512_ternarylogic_epi64(a, b, c, 0x96);    // a ^ b ^ c
  *carry = _mm512_ternarylogic_epi64(a, b, c, 0xe8);  // majority
}

// Carry-save counter for any number of taps (at most 63): pending[l] holds up
// to two vectors of weight 2^l; a third one triggers a full add whose carry
// moves up a level. Finish() leaves one vector (or none) per level: the planes.
struct OnlineCounter {
  // Only count[] starts at zero: pending[l][i] is written before it is read
  // (i < count[l]); zeroing it cost a 960-byte store per group.
  __m512i pending[kMaxPlanes + 1][2];
  int count[kMaxPlanes + 1] = {};

  void Add(__m512i v, int level) {
    for (; level <= kMaxPlanes; ++level) {
      if (count[level] < 2) {
        pending[level][count[level]++] = v;
        return;
      }
      __m512i sum, carry;
      FullAdd(pending[level][0], pending[level][1], v, &sum, &carry);
      pending[level][0] = sum;
      count[level] = 1;
      v = carry;
    }
  }
  void Finish(__m512i* planes, int n) {
    for (int l = 0; l < n; ++l) {
      if (count[l] == 2) {
        const __m512i a = pending[l][0], b = pending[l][1];
        pending[l][0] = _mm512_xor_si512(a, b);
        count[l] = 1;
        Add(_mm512_and_si512(a, b), l + 1);
      }
      planes[l] = count[l] != 0 ? pending[l][0] : _mm512_setzero_si512();
    }
  }
};

// The planes of the mismatch counts of `n` taps over the zmm at word `off`.
// Always inlined into the loops over a row's groups, where P is a constant
// and the planes stay in registers (GCC stopped inlining it on its own once it
// had two fixed trees).
__attribute__((always_inline)) inline void CountGroup(const PackedWord* const* streams,
                                                      const PackedWord* const* filters, i64 n,
                                                      i64 off, int planes, __m512i* out) {
  auto v = [&](i64 t) {
    return _mm512_xor_si512(Load(streams[t] + off), Load(filters[t] + off));
  };
  if (n == 9) {  // 3x3: a fixed tree, 5 full and 2 half adders
    __m512i s0, c0, s1, c1, s2, c2, c3, s4, c4;
    FullAdd(v(0), v(1), v(2), &s0, &c0);
    FullAdd(v(3), v(4), v(5), &s1, &c1);
    FullAdd(v(6), v(7), v(8), &s2, &c2);
    FullAdd(s0, s1, s2, &out[0], &c3);  // weight 1 done; c0..c3 weigh 2
    FullAdd(c0, c1, c2, &s4, &c4);
    out[1] = _mm512_xor_si512(s4, c3);
    const __m512i c5 = _mm512_and_si512(s4, c3);  // c4, c5 weigh 4
    out[2] = _mm512_xor_si512(c4, c5);
    out[3] = _mm512_and_si512(c4, c5);
    for (int l = 4; l < planes; ++l) out[l] = _mm512_setzero_si512();
    return;
  }
  if (n == 6) {  // 3x3 in a border row with pad_value 0: 2 full, 1 half adder
    __m512i s0, c0, s1, c1;
    FullAdd(v(0), v(1), v(2), &s0, &c0);
    FullAdd(v(3), v(4), v(5), &s1, &c1);
    out[0] = _mm512_xor_si512(s0, s1);
    const __m512i c2 = _mm512_and_si512(s0, s1);  // c0, c1, c2 weigh 2
    FullAdd(c0, c1, c2, &out[1], &out[2]);
    for (int l = 3; l < planes; ++l) out[l] = _mm512_setzero_si512();
    return;
  }
  OnlineCounter counter;
  for (i64 t = 0; t < n; ++t) counter.Add(v(t), 0);
  counter.Finish(out, planes);
}

// The tap rows output row `oy` uses, bit ky: those inside the input, and
// with pad_value 1 the padded ones too (read from the zero slot). VALID has
// none padded.
std::uint64_t UsedTapRows(const BDepthwiseConv2DParams& p, i64 oy) {
  const i64 y0 = oy * p.stride_h - p.pad_top;
  std::uint64_t used_rows = 0;
  for (i64 ky = 0; ky < p.kernel_h; ++ky) {
    const i64 iy = y0 + ky * p.dilation_h;
    if ((iy >= 0 && iy < p.in_h) || p.pad_value != 0) used_rows |= std::uint64_t{1} << ky;
  }
  return used_rows;
}

// Per-thread state of one call: the phase rows of the input rows in use (a
// small cache, an input row serving several output rows is split once).
class RowWorker {
 public:
  RowWorker(const Plan& plan, const DepthwiseRowsArgs& args)
      : plan_(plan),
        a_(args),
        p_(*args.params),
        kh_(p_.kernel_h),
        arena_(ArenaBytes(plan, args)) {
    slots_ = arena_.Take<PackedWord>(plan.slot_words * kh_);
    tags_ = arena_.Take<i64>(kh_);
    streams_ = arena_.Take<const PackedWord*>(plan.taps);
    filters_ = arena_.Take<const PackedWord*>(plan.taps);
    for (i64 i = 0; i < kh_; ++i) tags_[i] = -1;
  }

  // Output row oy of image n.
  void Row(i64 n, i64 oy);

 private:
  static i64 ArenaBytes(const Plan& plan, const DepthwiseRowsArgs& a) {
    return Arena::Size<PackedWord>(plan.slot_words * a.params->kernel_h) +
           Arena::Size<i64>(a.params->kernel_h) +
           2 * Arena::Size<const PackedWord*>(plan.taps);
  }

  const PackedWord* Slot(i64 n, i64 iy, const i64* needed, i64 needed_count);
  void SplitRow(const PackedWord* src, const float* float_src, PackedWord* dst,
                bool zero_padding) const;
  void WriteFloat(i64 row, i64 q, __m512i d, i64 pixel, i64 w) const;
  template <int P>
  void Quarters(i64 row, i64 used);
  template <int P>
  void PackedGroups(i64 row, i64 used);

  const Plan& plan_;
  const DepthwiseRowsArgs& a_;
  const BDepthwiseConv2DParams& p_;
  const i64 kh_;
  Arena arena_;
  PackedWord* slots_;  // kh_ slots
  i64* tags_;          // n * in_h + iy of each slot, -1 when empty
  // The current row's tables in the plan (its set of used tap rows).
  const std::int8_t* base_ = nullptr;
  const std::uint64_t* limits_ = nullptr;
  const PackedWord** streams_;
  const PackedWord** filters_;
};

// The phases of one padded input row: its pixels from the packed row `src`,
// or, when `float_src` is set instead (src null), binarised from that row of
// the float input as they are placed (one pass over the floats, no packed copy
// of the row written and copied again); and with `zero_padding` the padding
// pixels' zero words (the same in every row: a slot split before in this call
// has them already).
void RowWorker::SplitRow(const PackedWord* src, const float* float_src, PackedWord* dst,
                         bool zero_padding) const {
  const BDepthwiseConv2DParams& p = p_;
  const i64 words = plan_.words, s = p.stride_w;
  for (i64 r = 0; r < s; ++r) {
    PackedWord* phase = dst + r * plan_.phase_words;
    // Pixel m of the phase is input pixel ix = s * m + r - pad_left, inside
    // the input for m in [m_lo, m_hi).
    const i64 m_lo = plan_.phase_lo[r], m_hi = plan_.phase_hi[r];
    if (m_hi > m_lo) {
      const i64 first = s * m_lo + r - p.pad_left;
      PackedWord* to = phase + m_lo * words;
      if (float_src != nullptr) {  // channels_in = 32 * words floats per pixel
        const float* from = float_src + first * p.channels_in;
        if (s == 1) {  // the run as one long pixel
          PackStrided(from, 0, to, (m_hi - m_lo) * words, 1);
        } else {
          PackStrided(from, s * p.channels_in, to, words, m_hi - m_lo);  // every s-th pixel
        }
      } else if (s == 1) {
        std::memcpy(to, src + first * words,
                    static_cast<std::size_t>((m_hi - m_lo) * words) * sizeof(PackedWord));
      } else {
        CopyStrided(src + first * words, s * words, to, words, m_hi - m_lo);  // every s-th pixel
      }
    }
    if (zero_padding) {
      std::memset(phase, 0, static_cast<std::size_t>(m_lo * words) * sizeof(PackedWord));
      std::memset(phase + m_hi * words, 0,
                  static_cast<std::size_t>((plan_.phase_pixels - m_hi) * words) *
                      sizeof(PackedWord));
    }
  }
}

// The phase rows of input row iy of image n, split into a slot not holding
// one of the `needed` rows (there is one: kh_ slots, at most kh_ - 1 others
// needed) unless already there.
const PackedWord* RowWorker::Slot(i64 n, i64 iy, const i64* needed, i64 needed_count) {
  const BDepthwiseConv2DParams& p = p_;
  const i64 tag = n * p.in_h + iy;
  for (i64 i = 0; i < kh_; ++i) {
    if (tags_[i] == tag) return slots_ + i * plan_.slot_words;
  }
  i64 victim = 0;
  for (i64 i = 0; i < kh_; ++i) {
    bool in_use = false;
    for (i64 k = 0; k < needed_count; ++k) in_use = in_use || needed[k] == tags_[i];
    if (!in_use) {
      victim = i;
      break;
    }
  }
  const bool padding_zeroed = tags_[victim] >= 0;
  tags_[victim] = tag;
  PackedWord* slot = slots_ + victim * plan_.slot_words;
  if (a_.float_input == nullptr) {
    SplitRow(a_.input + tag * p.in_w * plan_.words, nullptr, slot, !padding_zeroed);
  } else {
    // The row's floats binarised straight into the phases, once per row as
    // the output rows come to it: the floats are read once, between the
    // output rows' work, and no packed copy of the input is written and read
    // back.
    SplitRow(nullptr, a_.float_input + tag * p.in_w * p.channels_in, slot, !padding_zeroed);
  }
  return slot;
}

// The float output of the 64 lanes of quarter q (flat words 2q, 2q + 1) of the
// row, D in the bytes of d; (pixel, w) = flat word 2q.
void RowWorker::WriteFloat(i64 row, i64 q, __m512i d, i64 pixel, i64 w) const {
  const BDepthwiseConv2DParams& p = p_;
  const i64 channels = plan_.channels, words = plan_.words;
  const bool relu = p.activation == Activation::kRelu;
  const float* m = a_.multiplier;
  const float* b = a_.bias;
  float* out_row = a_.output + row * p.out_w * channels;
  const __m512 zero = _mm512_setzero_ps();
  for (int half = 0; half < 2; ++half) {
    if (2 * q + half >= plan_.row_words) return;
    float* out = out_row + pixel * channels;
    for (int k = 0; k < 2; ++k) {
      const i64 c = w * 32 + 16 * k;
      const i64 n = channels - c;
      if (n <= 0) break;
      __m128i bytes = _mm_setzero_si128();
      switch (2 * half + k) {  // the lane index must be a constant
        case 0: bytes = _mm512_extracti32x4_epi32(d, 0); break;
        case 1: bytes = _mm512_extracti32x4_epi32(d, 1); break;
        case 2: bytes = _mm512_extracti32x4_epi32(d, 2); break;
        default: bytes = _mm512_extracti32x4_epi32(d, 3); break;
      }
      const __m512 dot = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(bytes));
      if (n >= 16) {
        __m512 y = _mm512_add_ps(_mm512_mul_ps(dot, _mm512_loadu_ps(m + c)),
                                 _mm512_loadu_ps(b + c));
        if (relu) y = _mm512_max_ps(zero, y);  // both zero or NaN: y, as y < 0 ? 0 : y
        _mm512_storeu_ps(out + c, y);
      } else {
        const __mmask16 mask = static_cast<__mmask16>((1u << n) - 1u);
        __m512 y = _mm512_add_ps(_mm512_mul_ps(dot, _mm512_maskz_loadu_ps(mask, m + c)),
                                 _mm512_maskz_loadu_ps(mask, b + c));
        if (relu) y = _mm512_max_ps(zero, y);
        _mm512_mask_storeu_ps(out + c, mask, y);
      }
    }
    if (++w == words) {
      w = 0;
      ++pixel;
    }
  }
}

void RowWorker::Row(i64 n, i64 oy) {
  const BDepthwiseConv2DParams& p = p_;
  const i64 row = n * p.out_h + oy;
  const i64 y0 = oy * p.stride_h - p.pad_top;
  // The input rows the taps read; a padded row is skipped (pad_value 0) or
  // read from the zero slot (pad_value 1; VALID has none).
  const std::uint64_t used_rows = UsedTapRows(p, oy);
  i64 needed[kMaxFastTaps];
  i64 needed_count = 0;
  for (i64 ky = 0; ky < p.kernel_h; ++ky) {
    const i64 iy = y0 + ky * p.dilation_h;
    if (iy >= 0 && iy < p.in_h) needed[needed_count++] = n * p.in_h + iy;
  }
  i64 used = 0;
  for (i64 ky = 0; ky < p.kernel_h; ++ky) {
    if (((used_rows >> ky) & 1u) == 0) continue;
    const i64 iy = y0 + ky * p.dilation_h;
    const PackedWord* slot =
        iy >= 0 && iy < p.in_h ? Slot(n, iy, needed, needed_count) : plan_.zero_slot;
    for (i64 kx = 0; kx < p.kernel_w; ++kx) {
      streams_[used] = slot + plan_.tap_offset[kx];
      filters_[used] = plan_.filter_rows + (ky * p.kernel_w + kx) * plan_.group_words;
      ++used;
    }
  }
  // The row's tables: the plan has them for every set of used tap rows
  // (FindKeys walks the output rows with UsedTapRows too); the bound only
  // keeps the look-up inside the plan.
  i64 key = 0;
  while (key + 1 < plan_.key_count && plan_.keys[key] != used_rows) ++key;
  base_ = plan_.bases + key * plan_.base_bytes;
  if (a_.output_bits != nullptr) {
    limits_ = plan_.limits + key * plan_.limit_words;
    switch (plan_.planes) {
      case 1: return PackedGroups<1>(row, used);
      case 2: return PackedGroups<2>(row, used);
      case 3: return PackedGroups<3>(row, used);
      case 4: return PackedGroups<4>(row, used);
      case 5: return PackedGroups<5>(row, used);
      default: return PackedGroups<6>(row, used);
    }
  }

  switch (plan_.planes) {
    case 1: return Quarters<1>(row, used);
    case 2: return Quarters<2>(row, used);
    case 3: return Quarters<3>(row, used);
    case 4: return Quarters<4>(row, used);
    case 5: return Quarters<5>(row, used);
    default: return Quarters<6>(row, used);
  }
}

// Float output: counts the row's taps a zmm at a time, reads the counts out
// per quarter (64 lanes) and writes them. The fields used per quarter are copied to
// locals: the output stores could alias them, which would make the compiler
// reload them after every store.
template <int P>
void RowWorker::Quarters(i64 row, i64 used) {
  const DepthwiseRowsArgs& a = a_;
  const i64 row_words = plan_.row_words, words = plan_.words;
  const std::int8_t* const base = base_;
  const PackedWord* const* const streams = streams_;
  const PackedWord* const* const filters = filters_;
  // Float output with whole 64-channel pixels (channels = 64 * words / 2):
  // quarter q is the 64 floats at 64 q of the row, channels 64 (q % half).
  const bool whole = words % 2 == 0 && plan_.channels == 32 * words;
  const i64 half_words = words / 2;
  const bool relu = p_.activation == Activation::kRelu;
  float* const out_row = whole ? a.output + row * row_words * 32 : nullptr;
  const float* const multiplier = a.multiplier;
  const float* const bias = a.bias;
  const __m512 zero = _mm512_setzero_ps();
  __m512i twice_bit[P];  // 2^(l + 1) in every byte, set once (not per quarter)
  for (int l = 0; l < P; ++l) twice_bit[l] = _mm512_set1_epi8(static_cast<char>(2 << l));
  i64 pixel = 0, w = 0;  // of flat word 2q, tracked (no division per quarter)
  i64 chunk = 0;         // q % half_words for `whole`
  for (i64 g = 0; g * kVecWords < row_words; ++g) {
    __m512i plane_vecs[kMaxPlanes];
    CountGroup(streams, filters, used, g * kVecWords, P, plane_vecs);
    alignas(64) std::uint64_t plane_bits[P][8];
    for (int l = 0; l < P; ++l) _mm512_store_si512(plane_bits[l], plane_vecs[l]);
    const i64 quarters = (row_words - g * kVecWords + 1) / 2 < 8
                             ? (row_words - g * kVecWords + 1) / 2 : 8;
    for (int k = 0; k < quarters; ++k) {
      const i64 q = g * 8 + k;  // quarter: flat words 2q, 2q + 1
      // D = base - 2 * count, the count's plane l taking 2^(l + 1) off the
      // lanes it holds (|D| <= 63 and base <= 126: no byte wraps).
      __m512i d = _mm512_loadu_si512(base + 64 * q);
      for (int l = 0; l < P; ++l) {
        d = _mm512_mask_sub_epi8(d, _cvtu64_mask64(plane_bits[l][k]), d, twice_bit[l]);
      }
      if (whole) {
        const float* m = multiplier + 64 * chunk;
        const float* b = bias + 64 * chunk;
        float* out = out_row + 64 * q;
        // D's 16-byte lanes, each sign-extended to 16 int32 and converted.
        // (Reading them back from a 64-byte store instead, one load-fused
        // vpmovsxbd each, saves the extracts only if the compiler keeps the
        // store: GCC 12 turned it into these extracts, and a compiler barrier
        // that kept it was 10% slower on Zen 4, 56x56x64: a store forwarded
        // to loads inside it.)
        const __m128i lanes[4] = {_mm512_castsi512_si128(d), _mm512_extracti32x4_epi32(d, 1),
                                  _mm512_extracti32x4_epi32(d, 2),
                                  _mm512_extracti32x4_epi32(d, 3)};
        __m512 y[4];
        for (int i = 0; i < 4; ++i) {
          const __m512 dot = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(lanes[i]));
          y[i] = _mm512_add_ps(_mm512_mul_ps(dot, _mm512_loadu_ps(m + 16 * i)),
                               _mm512_loadu_ps(b + 16 * i));
        }
        const __m512 y0 = y[0], y1 = y[1], y2 = y[2], y3 = y[3];
        // max(0, y): for y = -0.0 or NaN vmaxps returns its second operand,
        // y, as the reference's `y < 0 ? 0 : y` does.
        _mm512_storeu_ps(out, relu ? _mm512_max_ps(zero, y0) : y0);
        _mm512_storeu_ps(out + 16, relu ? _mm512_max_ps(zero, y1) : y1);
        _mm512_storeu_ps(out + 32, relu ? _mm512_max_ps(zero, y2) : y2);
        _mm512_storeu_ps(out + 48, relu ? _mm512_max_ps(zero, y3) : y3);
        if (++chunk == half_words) chunk = 0;
        continue;
      }
      WriteFloat(row, q, d, pixel, w);
      w += 2;
      while (w >= words) {
        w -= words;
        ++pixel;
      }
    }
  }
}

// base = K_used + 2 * corr for every flat word of the row (bdepthwise_avx512.cc
// header), for the tap rows in `used_rows` (bit ky), into `base`
// (plan.base_bytes, zero past the row).
void BuildBase(const Plan& plan, const DepthwiseRowsArgs& a, std::uint64_t used_rows,
               std::int8_t* base) {
  const BDepthwiseConv2DParams& p = *a.params;
  const i64 words = plan.words;
  const i64 used_count = __builtin_popcountll(used_rows);
  const bool zero_pad = p.pad_value == 0 && p.padding == Padding::kSame;
  std::memset(base, 0, static_cast<std::size_t>(plan.base_bytes));
  for (i64 ox = 0; ox < p.out_w; ++ox) {
    std::int8_t* b = base + ox * words * 32;
    if (!zero_pad) {
      std::memset(b, static_cast<int>(plan.taps), static_cast<std::size_t>(words * 32));
      continue;
    }
    i64 valid = 0;
    for (i64 kx = 0; kx < p.kernel_w; ++kx) {
      const i64 ix = ox * p.stride_w - p.pad_left + kx * p.dilation_w;
      if (ix >= 0 && ix < p.in_w) ++valid;
    }
    std::memset(b, static_cast<int>(valid * used_count), static_cast<std::size_t>(words * 32));
    if (valid == p.kernel_w) continue;
    // + 2 per set filter bit: a masked byte add per word pair (64 channels).
    // The bytes of a lone last word's pair belong to the next pixel or the
    // slack at the end of the table, and are stored back unchanged.
    const __m512i two = _mm512_set1_epi8(2);
    for (i64 kx = 0; kx < p.kernel_w; ++kx) {
      const i64 ix = ox * p.stride_w - p.pad_left + kx * p.dilation_w;
      if (ix >= 0 && ix < p.in_w) continue;
      for (i64 ky = 0; ky < p.kernel_h; ++ky) {
        if (((used_rows >> ky) & 1u) == 0) continue;
        const PackedWord* f = a.filter_taps[ky * p.kernel_w + kx];
        for (i64 w = 0; w < words; w += 2) {
          const std::uint64_t bits =
              f[w] | (w + 1 < words ? static_cast<std::uint64_t>(f[w + 1]) << 32 : 0);
          const __m512i v = _mm512_loadu_si512(b + w * 32);
          _mm512_storeu_si512(b + w * 32, _mm512_mask_add_epi8(v, _cvtu64_mask64(bits), v, two));
        }
      }
    }
  }
}

// The bit-packed output compares the counts with a per-lane limit without
// reading them out. With base = K_used + 2 corr (BuildBase) and threshold T,
//     D < T  <=>  base - 2 c < T  <=>  c >= tau = floor((base - T) / 2) + 1.
// tau <= 0: always (tau = 0 does it); tau >= 2^P (beyond any count): never,
// a plane of its own. In bytes: x = base - T saturated to [-128, 127] (the
// saturation keeps both ends on the right side: |T| <= 64 and base <= 126,
// or T = -128 for padding channels, never), u = x + 128 as an unsigned
// byte, floor(x / 2) = floor(u / 2) - 64, so tau = max(floor(u / 2) - 63, 0)
// by an unsigned saturating subtract. Its bits then go to planes by byte
// tests, 64 lanes (one quarter) at a time.
void BuildLimits(const Plan& plan, const std::int8_t* base, std::uint64_t* limits) {
  const int planes = plan.planes;
  const __m512i low7 = _mm512_set1_epi8(0x7f);
  __m512i bit[kMaxPlanes + 1];  // 2^l in every byte, set once (not per quarter)
  for (int l = 0; l <= planes; ++l) bit[l] = _mm512_set1_epi8(static_cast<char>(1 << l));
  for (i64 q = 0; q < plan.group_words / 2; ++q) {
    const __m512i x = _mm512_subs_epi8(_mm512_loadu_si512(base + 64 * q),
                                       _mm512_loadu_si512(plan.thresholds + 64 * q));
    const __m512i u = _mm512_xor_si512(x, _mm512_set1_epi8(static_cast<char>(0x80)));
    const __m512i half = _mm512_and_si512(_mm512_srli_epi16(u, 1), low7);
    const __m512i tau = _mm512_subs_epu8(half, _mm512_set1_epi8(63));
    std::uint64_t* group = limits + (q / 8) * (kMaxPlanes + 1) * 8 + q % 8;
    for (int l = 0; l < planes; ++l) {
      group[8 * l] = _cvtmask64_u64(_mm512_test_epi8_mask(tau, bit[l]));
    }
    group[8 * planes] = _cvtmask64_u64(_mm512_cmpge_epu8_mask(tau, bit[planes]));
  }
}

// Bit-packed output: c >= tau by a bit-sliced comparison, most significant
// plane first (gt: c > tau on the planes so far, eq: equal so far), then
// (gt | eq) & ~never, XOR the flips: 3 instructions per plane for 512 lanes.
template <int P>
void RowWorker::PackedGroups(i64 row, i64 used) {
  const i64 row_words = plan_.row_words;
  PackedWord* const out = a_.output_bits + row * row_words;
  for (i64 g = 0; g * kVecWords < row_words; ++g) {
    __m512i c[kMaxPlanes];
    CountGroup(streams_, filters_, used, g * kVecWords, P, c);
    const std::uint64_t* limit = limits_ + g * (kMaxPlanes + 1) * 8;
    __m512i tau = _mm512_loadu_si512(limit + 8 * (P - 1));
    __m512i gt = _mm512_andnot_si512(tau, c[P - 1]);
    __m512i eq = _mm512_ternarylogic_epi64(c[P - 1], tau, tau, 0xc3);  // ~(c ^ tau)
    for (int l = P - 2; l >= 0; --l) {
      tau = _mm512_loadu_si512(limit + 8 * l);
      const __m512i c_above = _mm512_andnot_si512(tau, c[l]);
      gt = _mm512_ternarylogic_epi64(gt, eq, c_above, 0xf8);  // gt | (eq & c_above)
      eq = _mm512_ternarylogic_epi64(eq, c[l], tau, 0x90);    // eq & ~(c ^ tau)
    }
    const __m512i never = _mm512_loadu_si512(limit + 8 * P);
    const __m512i below = _mm512_ternarylogic_epi64(gt, eq, never, 0x54);  // (gt|eq) & ~never
    const __m512i bits = _mm512_xor_si512(below, _mm512_loadu_si512(plan_.flips + g * kVecWords));
    const i64 left = row_words - g * kVecWords;
    if (left >= kVecWords) {
      _mm512_storeu_si512(out + g * kVecWords, bits);
    } else {
      _mm512_mask_storeu_epi32(out + g * kVecWords, static_cast<__mmask16>((1u << left) - 1u),
                               bits);
    }
  }
}

// Fills data[period, size) with copies of data[0, period).
template <typename T>
void Repeat(T* data, i64 period, i64 size) {
  for (i64 have = period; have < size;) {
    const i64 n = have < size - have ? have : size - have;
    std::memcpy(data + have, data, static_cast<std::size_t>(n) * sizeof(T));
    have += n;
  }
}

// The sizes of a layer that BDepthwiseAvx512Takes: the plan's header fields
// but the pointers and the keys.
Plan Sizes(const DepthwiseRowsArgs& a) {
  const BDepthwiseConv2DParams& p = *a.params;
  Plan plan = {};
  plan.words = p.out_words();
  plan.channels = p.out_channels();
  plan.taps = p.kernel_h * p.kernel_w;
  plan.row_words = p.out_w * plan.words;
  plan.group_words = (plan.row_words + kVecWords - 1) / kVecWords * kVecWords;
  // Pixel m of a phase serves output pixels ox = m - (kx * dilation) / stride.
  plan.phase_pixels = p.out_w + (p.kernel_w - 1) * p.dilation_w / p.stride_w + 1;
  plan.phase_words = plan.phase_pixels * plan.words + kVecWords;
  plan.slot_words = p.stride_w * plan.phase_words;
  for (i64 r = 0; r < p.stride_w; ++r) {
    // The first m (at most phase_pixels) with stride * m + r - pad_left >=
    // ix, i.e. stride * m >= t = ix + pad_left - r: for ix = 0, then in_w.
    const auto first_at_least = [&](i64 ix) {
      const i64 t = ix + p.pad_left - r;
      const i64 m = t <= 0 ? 0 : (t + p.stride_w - 1) / p.stride_w;
      return m < plan.phase_pixels ? m : plan.phase_pixels;
    };
    plan.phase_lo[r] = first_at_least(0);
    plan.phase_hi[r] = first_at_least(p.in_w);
  }
  for (i64 kx = 0; kx < p.kernel_w; ++kx) {
    const i64 shift = kx * p.dilation_w;
    plan.tap_offset[kx] = shift % p.stride_w * plan.phase_words + shift / p.stride_w * plan.words;
  }
  plan.planes = 1;
  while ((i64{1} << plan.planes) - 1 < plan.taps) ++plan.planes;
  plan.base_bytes = plan.group_words * 32 + 64;
  plan.limit_words = a.threshold != nullptr ? plan.group_words / 16 * (kMaxPlanes + 1) * 8 : 0;
  return plan;
}

// The sets of used tap rows of the layer's output rows, in order of first
// appearance, into plan->keys. Consecutive output rows mostly share theirs,
// so only a change is looked up.
void FindKeys(const BDepthwiseConv2DParams& p, Plan* plan) {
  plan->key_count = 0;
  for (i64 oy = 0; oy < p.out_h; ++oy) {
    const std::uint64_t key = UsedTapRows(p, oy);
    if (plan->key_count > 0 && plan->keys[plan->key_count - 1] == key) continue;
    bool seen = false;
    for (i64 k = 0; k < plan->key_count; ++k) seen = seen || plan->keys[k] == key;
    if (!seen && plan->key_count < kMaxKeys) plan->keys[plan->key_count++] = key;
  }
}

// Bytes of the plan: the header and its tables (the Take calls of
// BuildBDepthwiseAvx512Plan, in that order).
i64 PlanBytes(const Plan& plan, i64 keys, bool bits_out) {
  return Arena::Size<Plan>(1) + Arena::Size<PackedWord>(plan.taps * plan.group_words) +
         (bits_out ? Arena::Size<std::int8_t>(plan.group_words * 32) +
                         Arena::Size<PackedWord>(plan.group_words)
                   : 0) +
         Arena::Size<PackedWord>(plan.slot_words) +
         Arena::Size<std::int8_t>(keys * plan.base_bytes) +
         Arena::Size<std::uint64_t>(keys * plan.limit_words);
}

// Bound on the plan's size for the tables that grow with the number of sets
// of used tap rows (at most 2 * kernel_h + 1 of them; one without zero
// padding): a layer past it (only kernels of many rows over very wide rows
// reach it) takes the AVX2 rows.
constexpr i64 kMaxPlanBytes = i64{1} << 26;

}  // namespace

bool BDepthwiseAvx512Takes(const BDepthwiseConv2DParams& p) {
  // Its buffers hold a few rows (of the output, and the input's phases, each
  // about in_w / stride pixels, plus a zmm of slack per phase): bounded here so
  // that an extreme shape (a very wide row, a huge stride) takes the AVX2 rows,
  // which keep no per-row copies, rather than allocating far more than the
  // tensors. The layers this kernel is for are far inside these limits.
  const i64 words = p.out_words();
  if (p.kernel_h * p.kernel_w > kMaxFastTaps || p.stride_w > kMaxFastStride ||
      p.out_w * words > kMaxFastRowWords || p.in_w * words > kMaxFastRowWords ||
      (p.kernel_w - 1) * p.dilation_w * words > kMaxFastRowWords) {
    return false;
  }
  // The plan's size with the largest possible number of keys and thresholds
  // (the same for both outputs, so that the float input's fusion, decided
  // from the params alone, never disagrees with the kernel).
  DepthwiseRowsArgs a;
  a.params = &p;
  const std::int32_t any_threshold = 0;
  a.threshold = &any_threshold;
  const bool zero_pad = p.pad_value == 0 && p.padding == Padding::kSame;
  return PlanBytes(Sizes(a), zero_pad ? 2 * p.kernel_h + 1 : 1, true) <= kMaxPlanBytes;
}

std::int64_t BDepthwiseAvx512PlanBytes(const DepthwiseRowsArgs& args) {
  if (!BDepthwiseAvx512Takes(*args.params)) return 0;
  Plan plan = Sizes(args);
  FindKeys(*args.params, &plan);
  return PlanBytes(plan, plan.key_count, args.threshold != nullptr);
}

const DepthwiseAvx512Plan* BuildBDepthwiseAvx512Plan(const DepthwiseRowsArgs& args,
                                                     void* storage) {
  const BDepthwiseConv2DParams& p = *args.params;
  Arena arena(storage);
  Plan* const plan = arena.Take<Plan>(1);
  *plan = Sizes(args);
  FindKeys(p, plan);
  const i64 taps = plan->taps, words = plan->words, group_words = plan->group_words;
  const bool bits_out = args.threshold != nullptr;

  // The filter words of every tap repeated along the row, and for a
  // bit-packed output the thresholds (one byte per channel) and flips (one
  // bit): one pixel's worth written, then doubled by copies.
  PackedWord* const filter_rows = arena.Take<PackedWord>(taps * group_words);
  for (i64 t = 0; t < taps; ++t) {
    PackedWord* dst = filter_rows + t * group_words;
    std::memcpy(dst, args.filter_taps[t], static_cast<std::size_t>(words) * sizeof(PackedWord));
    Repeat(dst, words, group_words);
  }
  plan->filter_rows = filter_rows;
  std::int8_t* const thresholds = bits_out ? arena.Take<std::int8_t>(group_words * 32) : nullptr;
  PackedWord* const flips = bits_out ? arena.Take<PackedWord>(group_words) : nullptr;
  if (bits_out) {
    // Clamped to [-64, 64] and narrowed 16 channels at a time; -128 past
    // the last channel (args.threshold is padded to whole 64-channel chunks,
    // so whole vectors of it can be read).
    for (i64 o = 0; o < words * 32; o += 16) {
      const __m512i t = _mm512_min_epi32(
          _mm512_max_epi32(_mm512_loadu_si512(args.threshold + o), _mm512_set1_epi32(-64)),
          _mm512_set1_epi32(64));
      const i64 left = plan->channels - o;
      const __mmask16 real = left >= 16 ? __mmask16{0xffff}
                                        : static_cast<__mmask16>(left > 0 ? (1u << left) - 1u : 0u);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(thresholds + o),
                       _mm512_cvtepi32_epi8(_mm512_mask_blend_epi32(
                           real, _mm512_set1_epi32(-128), t)));
    }
    Repeat(thresholds, words * 32, group_words * 32);
    for (i64 w = 0; w < words; ++w) {
      flips[w] = static_cast<PackedWord>(args.flip_bits[w / 2] >> (32 * (w % 2)));
    }
    Repeat(flips, words, group_words);
  }
  plan->thresholds = thresholds;
  plan->flips = flips;
  // The zero slot: the phases of a padding row (+1 pixels), never split.
  PackedWord* const zero_slot = arena.Take<PackedWord>(plan->slot_words);
  std::memset(zero_slot, 0, static_cast<std::size_t>(plan->slot_words) * sizeof(PackedWord));
  plan->zero_slot = zero_slot;
  // Per set of used tap rows, its base table and its count limits.
  std::int8_t* const bases = arena.Take<std::int8_t>(plan->key_count * plan->base_bytes);
  std::uint64_t* const limits =
      bits_out ? arena.Take<std::uint64_t>(plan->key_count * plan->limit_words) : nullptr;
  for (i64 k = 0; k < plan->key_count; ++k) {
    std::int8_t* const base = bases + k * plan->base_bytes;
    BuildBase(*plan, args, plan->keys[k], base);
    if (bits_out) BuildLimits(*plan, base, limits + k * plan->limit_words);
  }
  plan->bases = bases;
  plan->limits = limits;
  return plan;
}

void BDepthwiseRowsAvx512(const DepthwiseRowsArgs& args, ParallelExecutor& executor) {
  if (args.avx512_plan == nullptr) {
    // A layer it does not take (BDepthwiseAvx512Takes); never with a float
    // input: the dispatch point packs it first then.
    BDepthwiseRowsAvx2(args, executor);
    return;
  }
  const BDepthwiseConv2DParams& p = *args.params;
  const Plan& plan = *args.avx512_plan;
  if (p.batch * p.out_h * p.out_w == 0) return;
  executor.ParallelFor(p.batch * p.out_h, plan.row_words * plan.taps * 4 + plan.row_words * 16,
                       [&](i64 begin, i64 end) {
    RowWorker worker(plan, args);
    // (image, row) stepped along, not divided out per row.
    for (i64 row = begin, n = begin / p.out_h, oy = begin % p.out_h; row < end; ++row) {
      worker.Row(n, oy);
      if (++oy == p.out_h) {
        oy = 0;
        ++n;
      }
    }
  });
}

}  // namespace lowbit
#endif  // LOWBIT_X86_SIMD
