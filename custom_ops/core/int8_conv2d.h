// int8 convolution with few input channels (TFLite's builtin CONV_2D, int8
// per-channel), for the stem conv of mixed int8 + binary models.
//
// Why our own: on x86 CPUs with AMX, XNNPACK runs an int8 conv as one GEMM
// per filter tap with K = the input channels, padded to AMX tiles 64 bytes
// deep; over 3 input channels (an RGB stem) most of that work is padding, and
// QuickNet's int8 stem took ~3x its float32 time (docs/int8.md). Here the
// whole KH*KW*C patch of an output pixel is one dot product (27 products for
// a 3x3 RGB stem, each kernel row's 9 padded to 12 so that it is read in
// place from the image), 16 output channels per AVX-512 VNNI vector. On Arm
// CPUs without the dot-product instructions (a Pi 4) XNNPACK's int8 stem took
// 1.8x the instructions of its float32 one; the NEON kernel here takes 0.58x,
// and where SDOT is there (a Pi 5) its SDOT variant 0.61x XNNPACK's int8 one
// (core/int8_conv2d_neon.cc, docs/int8.md).
//
// Arithmetic: exactly TFLite's reference int8 per-channel conv
// (reference_integer_ops::ConvPerChannel), restated:
//   acc[c] = bias[c] + sum over taps inside the image, input channels i of
//            (x - input_zero_point) * w[c, kh, kw, i]          (int32)
//   out[c] = clamp(MultiplyByQuantizedMultiplier(acc[c], m[c], s[c])
//                  + output_zero_point, out_min, out_max)
// with (m[c], s[c]) = QuantizeMultiplier(input_scale * filter_scale[c] /
// output_scale) in double precision, and [out_min, out_max] the fused
// activation's range in codes. Taps outside the image contribute nothing.
#ifndef LOWBIT_CORE_INT8_CONV2D_H_
#define LOWBIT_CORE_INT8_CONV2D_H_

#include <cstdint>
#include <vector>

#include "custom_ops/core/types.h"

namespace lowbit {

// The fast kernels built into this library (each entered only where the CPU
// can run it and it is the better choice; callers go through Int8Conv2D):
// AVX-512 VNNI on x86_64 (core/int8_conv2d_avx512vnni.cc), NEON on Arm and
// its SDOT variant on aarch64 Linux (core/int8_conv2d_neon.cc), with GCC or
// Clang.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define LOWBIT_INT8_CONV_VNNI 1
#else
#define LOWBIT_INT8_CONV_VNNI 0
#endif
#if (defined(__aarch64__) || defined(__ARM_NEON)) && (defined(__GNUC__) || defined(__clang__))
#define LOWBIT_INT8_CONV_NEON 1
#else
#define LOWBIT_INT8_CONV_NEON 0
#endif
// Its SDOT variant on aarch64 Linux (entered where AT_HWCAP has ASIMDDP).
#if LOWBIT_INT8_CONV_NEON && defined(__aarch64__) && defined(__linux__)
#define LOWBIT_INT8_CONV_SDOT 1
#else
#define LOWBIT_INT8_CONV_SDOT 0
#endif

// Geometry and the quantization of the activations. Shapes NHWC; the filter
// is [out_c, kernel_h, kernel_w, in_c] (TFLite's OHWI).
struct Int8Conv2DParams {
  int batch = 0, in_h = 0, in_w = 0, in_c = 0;
  int out_h = 0, out_w = 0, out_c = 0;
  int kernel_h = 0, kernel_w = 0;
  int stride_h = 1, stride_w = 1, dilation_h = 1, dilation_w = 1;
  int pad_top = 0, pad_left = 0;  // taps before the image (TFLite's padding)
  std::int32_t input_zero_point = 0, output_zero_point = 0;
  std::int32_t out_min = -128, out_max = 127;  // the activation's range in codes
};

// Sets out_h, out_w, pad_top and pad_left from the input size, kernel,
// strides and dilations by TFLite's padding rules for SAME (true) or VALID
// (ConvAxisGeometry, core/bconv2d.h: the binary conv's; the larger half of
// SAME's padding goes after the image).
void ComputeInt8Conv2DGeometry(bool same, Int8Conv2DParams* params);

// The padded copy of one input image that the fast kernels read their taps
// from in place: every tap any output reads, rows from -pad_top to the last
// output's last tap, the same for columns (padded taps hold the input's zero
// point, in each kernel's encoding); `values` = its elements per row
// (cols * in_c) and per image (rows * cols * in_c).
struct Int8PaddedImage {
  std::int64_t row_values = 0, image_values = 0;
};
Int8PaddedImage ComputeInt8PaddedImage(const Int8Conv2DParams& params);

// A real multiplier as (q, shift) with m ~= q * 2^(shift - 31), q in
// [2^30, 2^31) (TFLite's QuantizeMultiplier): frexp, q = round(fraction *
// 2^31) half away from zero, q == 2^31 -> 2^30 with shift + 1; shift < -31
// (a multiplier below 2^-32) -> q = 0, shift = 0; m == 0 -> (0, 0).
void QuantizeMultiplier(double multiplier, std::int32_t* quantized, int* shift);

// x * m as TFLite's MultiplyByQuantizedMultiplier (the double-rounding
// definition, that of the pip runtimes: tests/tflite/test_int8_conv2d.py
// checks it bit-exactly against their reference kernels):
//   left = max(shift, 0), right = max(-shift, 0)
//   RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(x << left, q), right)
// where the doubling high product of a and b is floor((a * b + 2^30) / 2^31)
// (64-bit product; only a = b = INT32_MIN saturates, to INT32_MAX: q is never
// negative here) and RoundingDivideByPOT rounds to nearest, halves away from
// zero. x << left wraps modulo 2^32 as the reference's int32 product does.
std::int32_t MultiplyByQuantizedMultiplier(std::int32_t x, std::int32_t quantized, int shift);

// Everything about one conv that does not change between calls: the filter,
// bias and requantization per output channel, and the filter packed for the
// fast kernel of this build (AVX-512 VNNI, NEON). Built once (the delegate:
// when it claims the node).
class Int8Conv2DPlan {
 public:
  // `filter` [out_c, kernel_h, kernel_w, in_c]; `bias` out_c values or
  // nullptr (zero); `multiplier`/`shift` out_c values (QuantizeMultiplier);
  // `input_zero_point` folds into the packed bias (below). Shifts must be in
  // [-31, 30] (the caller rejects a layer outside).
  Int8Conv2DPlan(int out_c, int kernel_h, int kernel_w, int in_c, const std::int8_t* filter,
                 const std::int32_t* bias, const std::int32_t* multiplier, const int* shift,
                 std::int32_t input_zero_point);

  int out_c() const { return out_c_; }
  int kernel_h() const { return kernel_h_; }
  int kernel_w() const { return kernel_w_; }
  int in_c() const { return in_c_; }
  std::int32_t input_zero_point() const { return input_zero_point_; }
  const std::vector<std::int8_t>& filter() const { return filter_; }
  const std::vector<std::int32_t>& bias() const { return bias_; }
  const std::vector<std::int32_t>& multiplier() const { return multiplier_; }
  const std::vector<int>& shift() const { return shift_; }

  // The VNNI layout. vpdpbusd multiplies 4 byte pairs per lane, so each
  // kernel row's kernel_w * in_c taps (the filter's (kw, i) order, which is
  // the input's byte order along a row when dilation_w is 1) are padded with
  // ZERO weights to row_groups = ceil(kernel_w * in_c / 4) groups of 4:
  // groups = kernel_h * row_groups in all. The kernel multiplies the weights
  // with bytes u = x + 128 (x ^ 0x80: vpdpbusd multiplies an UNSIGNED byte by
  // a signed one) of a padded image whose padded taps are u =
  // input_zero_point + 128, and the bytes that meet the zero weights are
  // anything (a neighbouring pixel's): they add u * 0 = 0. So over the real
  // taps, the padded ones included (their x - zp is 0),
  //   sum u * w = sum (x - zp) * w + (128 + zp) * sum w,
  // and with
  //   packed_bias[c] = bias[c] - (128 + zp) * sum of all w[c, ...]
  // (the sum over the K real weights; the zero ones add nothing)
  //   acc = packed_bias[c] + sum u * w
  // is the reference's accumulator, modulo 2^32 like its int32 sums.
  int row_groups() const { return row_groups_; }    // ceil(kernel_w * in_c / 4)
  int groups() const { return groups_; }            // kernel_h * row_groups
  int channel_blocks() const { return blocks_; }    // ceil(out_c / 16)
  // [block][kernel_h][row_groups][16 channels][4 bytes]; channels past out_c
  // and bytes past a row's taps are zero.
  const std::int8_t* packed_filter() const { return packed_filter_.data(); }
  // [block * 16] each; channels past out_c hold 0 / multiplier 0.
  const std::int32_t* packed_bias() const { return packed_bias_.data(); }
  const std::int32_t* packed_multiplier() const { return packed_multiplier_.data(); }
  const std::int32_t* left_shift() const { return left_shift_.data(); }
  const std::int32_t* right_shift() const { return right_shift_.data(); }

  // The NEON layout (built where LOWBIT_INT8_CONV_NEON, else empty): the
  // weights as int16, [block][K taps in the filter's (kh, kw, i) order][16
  // channels], channels past out_c zero. The NEON kernel multiplies them with
  // u = x + 128 as int16 and starts from packed_bias() (its comment).
  const std::int16_t* wide_filter() const { return wide_filter_.data(); }
  // The SDOT variant's bias (where LOWBIT_INT8_CONV_SDOT, else empty):
  // [block * 16], bias[c] - input_zero_point * sum of w[c, ...] modulo 2^32
  // (it multiplies packed_filter() with the signed input bytes x).
  const std::int32_t* sdot_bias() const { return sdot_bias_.data(); }

 private:
  int out_c_, kernel_h_, kernel_w_, in_c_;
  std::int32_t input_zero_point_;
  std::vector<std::int8_t> filter_;
  std::vector<std::int32_t> bias_, multiplier_;
  std::vector<int> shift_;
  int row_groups_ = 0, groups_ = 0, blocks_ = 0;
  std::vector<std::int8_t> packed_filter_;
  std::vector<std::int32_t> packed_bias_, packed_multiplier_, left_shift_, right_shift_;
  std::vector<std::int16_t> wide_filter_;
  std::vector<std::int32_t> sdot_bias_;
};

// The reference loop nest of the arithmetic above (any CPU); ground truth
// for the checker (custom_ops/tests/int8_conv2d_check.cc).
void Int8Conv2DPortable(const Int8Conv2DPlan& plan, const Int8Conv2DParams& params,
                        const std::int8_t* input, std::int8_t* output,
                        ParallelExecutor& executor);

// True when this library has a fast kernel, this CPU can run it and it is
// the better choice than XNNPACK's: x86 with AVX-512 F, BW, VL and VNNI;
// Arm with NEON (aarch64 Linux, armv7; on aarch64 CPUs with the dot-product
// instructions, a Cortex-A76, the SDOT variant). The delegate claims int8
// convs only then.
bool Int8Conv2DHasFastPath();

// Why Int8Conv2DHasFastPath() is false on this build and CPU, for errors
// ("this CPU lacks AVX-512 VNNI", ...).
const char* Int8Conv2DNoFastPathReason();

// The fast kernel where Int8Conv2DHasFastPath(), else the portable one; both
// give the same codes.
void Int8Conv2D(const Int8Conv2DPlan& plan, const Int8Conv2DParams& params,
                const std::int8_t* input, std::int8_t* output, ParallelExecutor& executor);

// The AVX-512 VNNI kernel (where LOWBIT_INT8_CONV_VNNI), entered only where
// the CPU has the features.
void Int8Conv2DAvx512Vnni(const Int8Conv2DPlan& plan, const Int8Conv2DParams& params,
                          const std::int8_t* input, std::int8_t* output,
                          ParallelExecutor& executor);

// The NEON kernel (where LOWBIT_INT8_CONV_NEON): runs on any Arm CPU with
// NEON (the checker calls it directly); Int8Conv2D enters it only where
// Int8Conv2DHasFastPath().
void Int8Conv2DNeon(const Int8Conv2DPlan& plan, const Int8Conv2DParams& params,
                    const std::int8_t* input, std::int8_t* output, ParallelExecutor& executor);

// The SDOT variant (where LOWBIT_INT8_CONV_SDOT), for CPUs with the
// dot-product instructions; convs with dilation_w > 1 go to Int8Conv2DNeon.
void Int8Conv2DNeonSdot(const Int8Conv2DPlan& plan, const Int8Conv2DParams& params,
                        const std::int8_t* input, std::int8_t* output,
                        ParallelExecutor& executor);

// True where the CPU has the dot-product instructions (aarch64 Linux:
// AT_HWCAP's ASIMDDP); false on any other build.
bool Int8Conv2DHasSdot();

}  // namespace lowbit

#endif  // LOWBIT_CORE_INT8_CONV2D_H_
