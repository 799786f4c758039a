#include "custom_ops/core/bconv2d_bitpacked.h"

#include <cmath>
#include <cstring>
#include <vector>

#include "custom_ops/core/bconv2d_kernels.h"
#include "custom_ops/core/scratch.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace lowbit {
namespace {

// The float path's bit for dot product d: the output transform exactly as the
// kernels compute it (this file is built with -ffp-contract=off like them),
// then the sign of core/bitpack.h (negative normal or -inf).
bool FloatPathBit(std::int64_t d, float m, float b) {
  const float y = static_cast<float>(d) * m + b;
  std::uint32_t u;
  std::memcpy(&u, &y, sizeof(u));
  return u >= 0x80800000u && u <= 0xff800000u;
}

}  // namespace

Status ParseOutputType(const std::string& text, OutputType* type) {
  if (text == "float") {
    *type = OutputType::kFloat;
  } else if (text == "bitpacked") {
    *type = OutputType::kBitpacked;
  } else if (text == "int8") {
    *type = OutputType::kInt8;
  } else {
    return Status::Error("output_type must be \"float\", \"bitpacked\" or \"int8\", got \"" +
                         text + "\"");
  }
  return Status::Ok();
}

Status ComputeBConv2DThresholds(const BConv2DParams& p, const float* multiplier,
                                const float* bias, std::int32_t* threshold,
                                std::uint8_t* flip) {
  // |D| <= K <= 2^24 (CheckBConv2DOptions), so every D and K + 1 fit int32.
  const std::int64_t k = p.kernel_h * p.kernel_w * p.channels_in;
  for (std::int64_t c = 0; c < p.out_channels; ++c) {
    const float m = multiplier[c], b = bias[c];
    if (!std::isfinite(m) || !std::isfinite(b)) {
      return Status::Error("output_type \"bitpacked\" needs finite multiplier and bias, got "
                           "multiplier[" + std::to_string(c) + "] = " + std::to_string(m) +
                           ", bias[" + std::to_string(c) + "] = " + std::to_string(b));
    }
    if (p.activation == Activation::kRelu) {  // relu(y) is never negative
      threshold[c] = static_cast<std::int32_t>(-k);
      flip[c] = 0;
      continue;
    }
    if (m == 0.0f) {  // constant: y = b (or +0)
      threshold[c] = static_cast<std::int32_t>(-k);
      flip[c] = FloatPathBit(0, m, b) ? 1 : 0;
      continue;
    }
    // q(D) = (bit of D) XOR (m < 0) is true on a prefix of [-K, K]; find the
    // first D in [-K, K + 1] where it is false (K + 1: true everywhere).
    const bool negative = m < 0.0f;
    std::int64_t lo = -k, hi = k + 1;  // answer in [lo, hi]
    while (lo < hi) {
      const std::int64_t mid = lo + (hi - lo) / 2;
      if (FloatPathBit(mid, m, b) != negative) {
        lo = mid + 1;  // q(mid) true: the flip point is above mid
      } else {
        hi = mid;
      }
    }
    threshold[c] = static_cast<std::int32_t>(lo);
    flip[c] = negative ? 1 : 0;
  }
  return Status::Ok();
}

void BConv2DBitpacked(const BConv2DParams& params, const PackedWord* input,
                      const BConv2DFilter& filter, const std::int32_t* threshold,
                      const std::uint8_t* flip, PackedWord* output, ParallelExecutor& executor) {
  BConv2DParams p = params;
  p.activation = Activation::kNone;  // the raw dot product; ReLU is in the thresholds
  if (BitpackedOutputFused(filter.kernel())) {
    BConv2DFusedBitpacked(p, input, filter, threshold, flip, output, executor);
    return;
  }
  BitpackedFromDotProducts(
      p.batch * p.out_h * p.out_w, p.out_channels,
      [&](const float* ones, const float* zeros, float* dots) {
        BConv2D(p, input, filter, ones, zeros, dots, executor);
      },
      threshold, flip, output, executor);
}

namespace {

// Bits (d[c] < threshold[c]) of the 32 channels of a whole word, before the
// flips: the dot products are exact integers in float, so the comparison is
// made on their int32 values (exact for every threshold, K + 1 included).
inline PackedWord BelowThresholds(const float* d, const std::int32_t* threshold) {
#if defined(__SSE2__)
  // Part of the x86-64 baseline: 4 channels per compare, their sign mask.
  PackedWord word = 0;
  for (int c = 0; c < kBitsPerWord; c += 4) {
    const __m128i dot = _mm_cvttps_epi32(_mm_loadu_ps(d + c));
    const __m128i t = _mm_loadu_si128(reinterpret_cast<const __m128i*>(threshold + c));
    const int bits = _mm_movemask_ps(_mm_castsi128_ps(_mm_cmplt_epi32(dot, t)));
    word |= static_cast<PackedWord>(bits) << c;
  }
  return word;
#else
  PackedWord word = 0;
  for (int c = 0; c < kBitsPerWord; ++c) {
    word |= static_cast<PackedWord>(static_cast<std::int32_t>(d[c]) < threshold[c]) << c;
  }
  return word;
#endif
}

}  // namespace

void BitpackedFromDotProducts(std::int64_t pixels, std::int64_t cout, const DotProductFn& run,
                              const std::int32_t* threshold, const std::uint8_t* flip,
                              PackedWord* output, ParallelExecutor& executor) {
  const std::vector<float> ones(static_cast<std::size_t>(cout), 1.0f);
  const std::vector<float> zeros(static_cast<std::size_t>(cout), 0.0f);
  // float(D) * 1 + 0 == D exactly (|D| <= 2^24). This thread's scratch
  // (core/scratch.h), left uninitialised: `run` writes every value.
  float* const dots = ScratchFloats(ScratchSlot::kDotProducts, pixels * cout);
  run(ones.data(), zeros.data(), dots);
  const std::int64_t words = PackedWords(cout);
  const std::int64_t whole = cout / kBitsPerWord;  // words of 32 real channels
  // The flips of each word's channels, as one mask per word.
  std::vector<PackedWord> flips(static_cast<std::size_t>(words), 0);
  for (std::int64_t c = 0; c < cout; ++c) {
    flips[c / kBitsPerWord] |= static_cast<PackedWord>(flip[c] & 1u) << (c % kBitsPerWord);
  }
  executor.ParallelFor(pixels, cout, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t i = begin; i < end; ++i) {
      const float* d = dots + i * cout;
      PackedWord* out = output + i * words;
      for (std::int64_t w = 0; w < whole; ++w) {
        const std::int64_t c0 = w * kBitsPerWord;
        out[w] = BelowThresholds(d + c0, threshold + c0) ^ flips[w];
      }
      if (whole < words) {  // the tail: bits past cout stay 0 (the flips have none there)
        PackedWord word = 0;
        for (std::int64_t c = whole * kBitsPerWord; c < cout; ++c) {
          const auto dot = static_cast<std::int32_t>(d[c]);
          word |= static_cast<PackedWord>(dot < threshold[c]) << (c % kBitsPerWord);
        }
        out[whole] = word ^ flips[whole];
      }
    }
  });
}

}  // namespace lowbit
