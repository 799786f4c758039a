// Ground-truth binary convolution: unpacks every bit to +-1 and multiplies.
// Deliberately naive; the optimized kernels are tested against it.
#include "custom_ops/core/bconv2d_kernels.h"

namespace lowbit {
namespace {

int SignAt(const PackedWord* row, std::int64_t c) {
  return ((row[c / kBitsPerWord] >> (c % kBitsPerWord)) & 1u) ? -1 : 1;
}

}  // namespace

void BConv2DReference(const BConv2DParams& p, const PackedWord* input, const PackedWord* filter,
                      const float* multiplier, const float* bias,
                      const BConv2DEpilogue& epilogue, float* output) {
  const std::int64_t words = p.words();
  for (std::int64_t n = 0; n < p.batch; ++n) {
    for (std::int64_t oy = 0; oy < p.out_h; ++oy) {
      for (std::int64_t ox = 0; ox < p.out_w; ++ox) {
        for (std::int64_t co = 0; co < p.out_channels; ++co) {
          std::int64_t dot = 0;
          for (std::int64_t ky = 0; ky < p.kernel_h; ++ky) {
            for (std::int64_t kx = 0; kx < p.kernel_w; ++kx) {
              const std::int64_t iy = oy * p.stride_h - p.pad_top + ky * p.dilation_h;
              const std::int64_t ix = ox * p.stride_w - p.pad_left + kx * p.dilation_w;
              const bool inside = iy >= 0 && iy < p.in_h && ix >= 0 && ix < p.in_w;
              const PackedWord* w = filter + ((co * p.kernel_h + ky) * p.kernel_w + kx) * words;
              const PackedWord* x = inside ? input + ((n * p.in_h + iy) * p.in_w + ix) * words
                                           : nullptr;
              for (std::int64_t c = 0; c < p.channels_in; ++c) {
                // Outside the input the value is the pad value: +1 or 0.
                const int xv = inside ? SignAt(x, c) : p.pad_value;
                dot += xv * SignAt(w, c);
              }
            }
          }
          float y = static_cast<float>(dot) * multiplier[co] + bias[co];
          if (p.activation == Activation::kRelu && y < 0.0f) y = 0.0f;
          const std::int64_t index = ((n * p.out_h + oy) * p.out_w + ox) * p.out_channels + co;
          output[index] = epilogue.Apply(y, co, index);
        }
      }
    }
  }
}

}  // namespace lowbit
