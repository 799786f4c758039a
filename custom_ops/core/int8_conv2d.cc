#include "custom_ops/core/int8_conv2d.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "custom_ops/core/bconv2d.h"
#include "custom_ops/core/cpu_features.h"

#if LOWBIT_INT8_CONV_SDOT
#include <sys/auxv.h>  // getauxval, AT_HWCAP, HWCAP_ASIMDDP (glibc)
#ifndef HWCAP_ASIMDDP   // C libraries that leave it to <asm/hwcap.h>
#define HWCAP_ASIMDDP (1 << 20)  // the Linux arm64 ABI's bit
#endif
#endif

namespace lowbit {

void ComputeInt8Conv2DGeometry(bool same, Int8Conv2DParams* p) {
  const Padding padding = same ? Padding::kSame : Padding::kValid;
  auto axis = [padding](int in, int kernel, int stride, int dilation, int* out, int* pad) {
    std::int64_t size = 0, before = 0;
    ConvAxisGeometry(padding, in, static_cast<std::int64_t>(kernel - 1) * dilation + 1, stride,
                     0, 0, &size, &before);
    *out = static_cast<int>(size);  // <= in: fits
    *pad = static_cast<int>(before);
  };
  axis(p->in_h, p->kernel_h, p->stride_h, p->dilation_h, &p->out_h, &p->pad_top);
  axis(p->in_w, p->kernel_w, p->stride_w, p->dilation_w, &p->out_w, &p->pad_left);
}

Int8PaddedImage ComputeInt8PaddedImage(const Int8Conv2DParams& p) {
  const int last_row = (p.out_h - 1) * p.stride_h + (p.kernel_h - 1) * p.dilation_h;
  const int last_col = (p.out_w - 1) * p.stride_w + (p.kernel_w - 1) * p.dilation_w;
  const int rows = std::max(last_row + 1, p.pad_top + p.in_h);
  const int cols = std::max(last_col + 1, p.pad_left + p.in_w);
  Int8PaddedImage image;
  image.row_values = static_cast<std::int64_t>(cols) * p.in_c;
  image.image_values = rows * image.row_values;
  return image;
}

void QuantizeMultiplier(double multiplier, std::int32_t* quantized, int* shift) {
  if (multiplier == 0.0) {
    *quantized = 0;
    *shift = 0;
    return;
  }
  const double fraction = std::frexp(multiplier, shift);  // in [0.5, 1)
  std::int64_t q = static_cast<std::int64_t>(std::round(fraction * (1LL << 31)));
  if (q == (1LL << 31)) {  // the fraction rounded up to 1
    q /= 2;
    ++*shift;
  }
  if (*shift < -31) {  // below 2^-32: every int32 product rounds to 0
    *shift = 0;
    q = 0;
  }
  *quantized = static_cast<std::int32_t>(q);
}

namespace {

std::int32_t DoublingHighMul(std::int32_t a, std::int32_t b) {
  if (a == b && a == std::numeric_limits<std::int32_t>::min()) {
    return std::numeric_limits<std::int32_t>::max();
  }
  // The reference adds a nudge of 2^30 (1 - 2^30 for a negative product) and
  // divides by 2^31 truncating toward zero; both cases are floor((ab +
  // 2^30) / 2^31), an arithmetic shift (what the vector kernel computes).
  const std::int64_t ab = static_cast<std::int64_t>(a) * b;
  return static_cast<std::int32_t>((ab + (1LL << 30)) >> 31);
}

std::int32_t RoundingDivideByPOT(std::int32_t x, int exponent) {
  const std::int32_t mask = static_cast<std::int32_t>((1LL << exponent) - 1);
  const std::int32_t remainder = x & mask;
  const std::int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
  return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

}  // namespace

std::int32_t MultiplyByQuantizedMultiplier(std::int32_t x, std::int32_t quantized, int shift) {
  const int left = shift > 0 ? shift : 0;
  const int right = shift > 0 ? 0 : -shift;
  const auto shifted = static_cast<std::int32_t>(static_cast<std::uint32_t>(x) << left);
  return RoundingDivideByPOT(DoublingHighMul(shifted, quantized), right);
}

Int8Conv2DPlan::Int8Conv2DPlan(int out_c, int kernel_h, int kernel_w, int in_c,
                               const std::int8_t* filter, const std::int32_t* bias,
                               const std::int32_t* multiplier, const int* shift,
                               std::int32_t input_zero_point)
    : out_c_(out_c), kernel_h_(kernel_h), kernel_w_(kernel_w), in_c_(in_c),
      input_zero_point_(input_zero_point) {
  const int taps = kernel_h * kernel_w * in_c;  // K: one output's products
  filter_.assign(filter, filter + static_cast<std::size_t>(out_c) * taps);
  bias_.assign(out_c, 0);
  if (bias != nullptr) bias_.assign(bias, bias + out_c);
  multiplier_.assign(multiplier, multiplier + out_c);
  shift_.assign(shift, shift + out_c);

  row_groups_ = (kernel_w * in_c + 3) / 4;
  groups_ = kernel_h * row_groups_;
  blocks_ = (out_c + 15) / 16;
  packed_filter_.assign(static_cast<std::size_t>(blocks_) * groups_ * 64, 0);
  packed_bias_.assign(blocks_ * 16, 0);
  packed_multiplier_.assign(blocks_ * 16, 0);
  left_shift_.assign(blocks_ * 16, 0);
  right_shift_.assign(blocks_ * 16, 0);
#if LOWBIT_INT8_CONV_NEON
  wide_filter_.assign(static_cast<std::size_t>(blocks_) * taps * 16, 0);
#endif
#if LOWBIT_INT8_CONV_SDOT
  sdot_bias_.assign(blocks_ * 16, 0);
#endif
  for (int c = 0; c < out_c; ++c) {
    const int block = c / 16, lane = c % 16;
    std::int64_t weight_sum = 0;
    for (int k = 0; k < taps; ++k) {
      const std::int8_t w = filter_[static_cast<std::size_t>(c) * taps + k];
      weight_sum += w;
#if LOWBIT_INT8_CONV_NEON
      wide_filter_[(static_cast<std::size_t>(block) * taps + k) * 16 + lane] = w;
#endif
      // Tap k is byte `at` of kernel row kh's row_groups_ * 4 bytes.
      const int kh = k / (kernel_w * in_c), at = k % (kernel_w * in_c);
      packed_filter_[(static_cast<std::size_t>(block) * groups_ + kh * row_groups_ + at / 4) * 64 +
                     lane * 4 + at % 4] = w;
    }
    // Modulo 2^32, as the accumulator (see the header).
    const std::int64_t folded =
        static_cast<std::int64_t>(bias_[c]) - (128 + static_cast<std::int64_t>(input_zero_point)) *
                                                  weight_sum;
    packed_bias_[c] = static_cast<std::int32_t>(static_cast<std::uint32_t>(folded));
#if LOWBIT_INT8_CONV_SDOT
    const std::int64_t signed_folded = static_cast<std::int64_t>(bias_[c]) -
                                       static_cast<std::int64_t>(input_zero_point) * weight_sum;
    sdot_bias_[c] = static_cast<std::int32_t>(static_cast<std::uint32_t>(signed_folded));
#endif
    packed_multiplier_[c] = multiplier_[c];
    left_shift_[c] = shift_[c] > 0 ? shift_[c] : 0;
    right_shift_[c] = shift_[c] > 0 ? 0 : -shift_[c];
  }
}

void Int8Conv2DPortable(const Int8Conv2DPlan& plan, const Int8Conv2DParams& p,
                        const std::int8_t* input, std::int8_t* output,
                        ParallelExecutor& executor) {
  const int taps = p.kernel_h * p.kernel_w * p.in_c;
  const std::int64_t rows = static_cast<std::int64_t>(p.batch) * p.out_h;
  executor.ParallelFor(rows, static_cast<std::int64_t>(p.out_w) * p.out_c * taps,
                       [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t row = begin; row < end; ++row) {
      const int b = static_cast<int>(row / p.out_h), oh = static_cast<int>(row % p.out_h);
      const std::int8_t* image =
          input + static_cast<std::int64_t>(b) * p.in_h * p.in_w * p.in_c;
      std::int8_t* out = output + row * p.out_w * p.out_c;
      for (int ow = 0; ow < p.out_w; ++ow) {
        for (int c = 0; c < p.out_c; ++c) {
          const std::int8_t* w = plan.filter().data() + static_cast<std::size_t>(c) * taps;
          // int32 sums wrap like the reference's (computed in uint32).
          std::uint32_t acc = static_cast<std::uint32_t>(plan.bias()[c]);
          for (int kh = 0; kh < p.kernel_h; ++kh) {
            const int ih = oh * p.stride_h - p.pad_top + kh * p.dilation_h;
            if (ih < 0 || ih >= p.in_h) continue;
            for (int kw = 0; kw < p.kernel_w; ++kw) {
              const int iw = ow * p.stride_w - p.pad_left + kw * p.dilation_w;
              if (iw < 0 || iw >= p.in_w) continue;
              const std::int8_t* x =
                  image + (static_cast<std::int64_t>(ih) * p.in_w + iw) * p.in_c;
              const std::int8_t* wt = w + (kh * p.kernel_w + kw) * p.in_c;
              for (int i = 0; i < p.in_c; ++i) {
                acc += static_cast<std::uint32_t>((x[i] - p.input_zero_point) * wt[i]);
              }
            }
          }
          std::int32_t v = MultiplyByQuantizedMultiplier(static_cast<std::int32_t>(acc),
                                                         plan.multiplier()[c], plan.shift()[c]);
          // The reference clamps v + output_zero_point to [out_min, out_max];
          // clamping v to that range less the zero point first is the same
          // and cannot overflow.
          v = std::min(std::max(v, p.out_min - p.output_zero_point),
                       p.out_max - p.output_zero_point);
          out[static_cast<std::int64_t>(ow) * p.out_c + c] =
              static_cast<std::int8_t>(v + p.output_zero_point);
        }
      }
    }
  });
}

bool Int8Conv2DHasFastPath() {
#if LOWBIT_INT8_CONV_VNNI
  static const bool has = DetectCpuFeatures().Has(kCpuAvx512Vnni | kCpuAvx512Bw);
  return has;
#elif LOWBIT_INT8_CONV_SDOT
  // Without the dot-product instructions (a Pi 4) the SMLAL kernel; with
  // them (Cortex-A76: a Pi 5) its SDOT variant, which takes fewer
  // instructions than XNNPACK's SDOT kernels (docs/int8.md).
  return true;
#elif LOWBIT_INT8_CONV_NEON && !defined(__aarch64__)
  // armv7: every NEON CPU, with the SMLAL kernel (the SDOT variant is
  // aarch64's; a dot-product core under a 32-bit OS runs SMLAL too).
  return true;
#else
  return false;
#endif
}

bool Int8Conv2DHasSdot() {
#if LOWBIT_INT8_CONV_SDOT
  static const bool has = (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
  return has;
#else
  return false;
#endif
}

const char* Int8Conv2DNoFastPathReason() {
#if LOWBIT_INT8_CONV_VNNI
  return "this CPU lacks AVX-512 VNNI";
#else
  return "this build has no fast int8 conv kernel for this CPU (x86 AVX-512 VNNI or Arm NEON)";
#endif
}

void Int8Conv2D(const Int8Conv2DPlan& plan, const Int8Conv2DParams& params,
                const std::int8_t* input, std::int8_t* output, ParallelExecutor& executor) {
#if LOWBIT_INT8_CONV_VNNI
  if (Int8Conv2DHasFastPath()) {
    Int8Conv2DAvx512Vnni(plan, params, input, output, executor);
    return;
  }
#elif LOWBIT_INT8_CONV_NEON
  if (Int8Conv2DHasSdot()) {
    Int8Conv2DNeonSdot(plan, params, input, output, executor);
    return;
  }
  if (Int8Conv2DHasFastPath()) {
    Int8Conv2DNeon(plan, params, input, output, executor);
    return;
  }
#endif
  Int8Conv2DPortable(plan, params, input, output, executor);
}

}  // namespace lowbit
