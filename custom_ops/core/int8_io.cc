#include "custom_ops/core/int8_io.h"

#include <cmath>
#include <string>

namespace lowbit {
namespace {

// Elements per parallel work unit of the elementwise loops: big enough that
// splitting costs nothing next to the work.
constexpr std::int64_t kChunk = 4096;

// Runs fn(begin, end) over [0, count) in chunks of kChunk elements.
template <typename Fn>
void ForChunks(std::int64_t count, ParallelExecutor& executor, Fn fn) {
  const std::int64_t chunks = (count + kChunk - 1) / kChunk;
  executor.ParallelFor(chunks, kChunk, [&](std::int64_t first, std::int64_t last) {
    const std::int64_t end = last * kChunk < count ? last * kChunk : count;
    fn(first * kChunk, end);
  });
}

}  // namespace

Status CheckInt8Quantization(const char* tensor, float scale, std::int64_t zero_point) {
  if (!std::isfinite(scale) || !(scale > 0.0f)) {
    return Status::Error(std::string(tensor) + " scale must be finite and > 0, got " +
                         std::to_string(scale));
  }
  if (zero_point < -128 || zero_point > 127) {
    return Status::Error(std::string(tensor) + " zero point must be in [-128, 127], got " +
                         std::to_string(zero_point));
  }
  return Status::Ok();
}

void QuantizeInt8Values(const float* y, std::int64_t count, const Int8Quantization& q,
                        std::int8_t* out, ParallelExecutor& executor) {
  ForChunks(count, executor, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t i = begin; i < end; ++i) out[i] = QuantizeInt8(y[i], q);
  });
}

void DequantizeInt8Values(const std::int8_t* q, std::int64_t count, const Int8Quantization& quant,
                          float* out, ParallelExecutor& executor) {
  ForChunks(count, executor, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t i = begin; i < end; ++i) {
      out[i] = static_cast<float>(static_cast<std::int32_t>(q[i]) - quant.zero_point) * quant.scale;
    }
  });
}

void BitpackInt8Rows(const std::int8_t* input, std::int64_t rows, std::int64_t channels,
                     std::int32_t zero_point, PackedWord* output, ParallelExecutor& executor) {
  const std::int64_t words = PackedWords(channels);
  executor.ParallelFor(rows, channels, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t r = begin; r < end; ++r) {
      const std::int8_t* row = input + r * channels;
      PackedWord* dst = output + r * words;
      for (std::int64_t w = 0; w < words; ++w) {
        const std::int64_t c0 = w * kBitsPerWord;
        const int n = static_cast<int>(channels - c0 < kBitsPerWord ? channels - c0 : kBitsPerWord);
        // A fixed-trip loop over the 32 codes of a word (the common case),
        // which the compiler turns into vector compares.
        PackedWord word = 0;
        if (n == kBitsPerWord) {
          for (int b = 0; b < kBitsPerWord; ++b) {
            word |= static_cast<PackedWord>(row[c0 + b] < zero_point) << b;
          }
        } else {
          for (int b = 0; b < n; ++b) {
            word |= static_cast<PackedWord>(row[c0 + b] < zero_point) << b;
          }
        }
        dst[w] = word;
      }
    }
  });
}

void BConv2DInt8(const BConv2DParams& params, const PackedWord* input,
                 const BConv2DFilter& filter, const float* multiplier, const float* bias,
                 const BConv2DEpilogue& epilogue, const Int8Quantization& output_quantization,
                 float* scratch, std::int8_t* output, ParallelExecutor& executor) {
  BConv2D(params, input, filter, multiplier, bias, scratch, executor, epilogue);
  const std::int64_t count = params.batch * params.out_h * params.out_w * params.out_channels;
  QuantizeInt8Values(scratch, count, output_quantization, output, executor);
}

void BGemmInt8(const BGemmParams& params, const PackedWord* input, const BConv2DFilter& filter,
               const float* multiplier, const float* bias,
               const Int8Quantization& output_quantization, float* scratch, std::int8_t* output,
               ParallelExecutor& executor) {
  BGemm(params, input, filter, multiplier, bias, scratch, executor);
  QuantizeInt8Values(scratch, params.rows * params.out_channels, output_quantization, output,
                     executor);
}

}  // namespace lowbit
