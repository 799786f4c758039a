#include "custom_ops/core/bgemm.h"

#include <string>

namespace lowbit {
namespace {

// The limits of the convolution it runs as (core/bconv2d.cc): every dot
// product exact, every dimension small enough for int64 products.
constexpr std::int64_t kMaxChannels = std::int64_t{1} << 24;
constexpr std::int64_t kMaxDim = std::int64_t{1} << 30;

Status CheckRange(const char* name, std::int64_t value, std::int64_t lo, std::int64_t hi) {
  if (value < lo || value > hi) {
    return Status::Error(std::string(name) + " must be in [" + std::to_string(lo) + ", " +
                         std::to_string(hi) + "], got " + std::to_string(value));
  }
  return Status::Ok();
}

}  // namespace

BConv2DParams BGemmParams::AsConv2D() const {
  BConv2DParams p;
  p.batch = rows;
  p.in_h = p.in_w = 1;
  p.channels_in = channels_in;
  p.out_channels = out_channels;
  p.kernel_h = p.kernel_w = 1;
  p.padding = Padding::kValid;
  p.activation = activation;
  p.out_h = p.out_w = 1;
  return p;
}

Status CheckBGemmOptions(const BGemmParams& p) {
  return CheckRange("channels_in", p.channels_in, 1, kMaxChannels);
}

Status CheckBGemmShape(const BGemmParams& p) {
  Status s = CheckBGemmOptions(p);
  if (s.ok) s = CheckRange("rows (product of the leading dimensions)", p.rows, 0, kMaxDim);
  if (s.ok) s = CheckRange("out_channels", p.out_channels, 1, kMaxDim);
  return s;
}

void BGemm(const BGemmParams& params, const PackedWord* input, const BConv2DFilter& filter,
           const float* multiplier, const float* bias, float* output,
           ParallelExecutor& executor) {
  BConv2D(params.AsConv2D(), input, filter, multiplier, bias, output, executor);
}

Status ComputeBGemmThresholds(const BGemmParams& params, const float* multiplier,
                              const float* bias, std::int32_t* threshold, std::uint8_t* flip) {
  return ComputeBConv2DThresholds(params.AsConv2D(), multiplier, bias, threshold, flip);
}

void BGemmBitpacked(const BGemmParams& params, const PackedWord* input,
                    const BConv2DFilter& filter, const std::int32_t* threshold,
                    const std::uint8_t* flip, PackedWord* output, ParallelExecutor& executor) {
  BConv2DBitpacked(params.AsConv2D(), input, filter, threshold, flip, output, executor);
}

}  // namespace lowbit
