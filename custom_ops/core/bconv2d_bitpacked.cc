#include "custom_ops/core/bconv2d_bitpacked.h"

#include <cmath>
#include <cstring>
#include <vector>

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
  BitpackedFromDotProducts(
      p.batch * p.out_h * p.out_w, p.out_channels,
      [&](const float* ones, const float* zeros, float* dots) {
        BConv2D(p, input, filter, ones, zeros, dots, executor);
      },
      threshold, flip, output, executor);
}

void BitpackedFromDotProducts(std::int64_t pixels, std::int64_t cout, const DotProductFn& run,
                              const std::int32_t* threshold, const std::uint8_t* flip,
                              PackedWord* output, ParallelExecutor& executor) {
  const std::vector<float> ones(static_cast<std::size_t>(cout), 1.0f);
  const std::vector<float> zeros(static_cast<std::size_t>(cout), 0.0f);
  // float(D) * 1 + 0 == D exactly (|D| <= 2^24).
  std::vector<float> dots(static_cast<std::size_t>(pixels * cout));
  run(ones.data(), zeros.data(), dots.data());
  const std::int64_t words = PackedWords(cout);
  executor.ParallelFor(pixels, cout, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t i = begin; i < end; ++i) {
      const float* d = dots.data() + i * cout;
      PackedWord* out = output + i * words;
      for (std::int64_t w = 0; w < words; ++w) {
        PackedWord word = 0;
        const std::int64_t c0 = w * kBitsPerWord;
        const std::int64_t c1 = c0 + kBitsPerWord < cout ? c0 + kBitsPerWord : cout;
        for (std::int64_t c = c0; c < c1; ++c) {
          const auto dot = static_cast<std::int32_t>(d[c]);
          const PackedWord bit = static_cast<PackedWord>(dot < threshold[c]) ^ flip[c];
          word |= bit << (c - c0);
        }
        out[w] = word;
      }
    }
  });
}

}  // namespace lowbit
