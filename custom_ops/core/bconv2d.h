// Binary 2-D convolution on bit-packed NHWC data.
//
//   input   [batch, in_h, in_w, PackedWords(channels_in)]          packed words
//   filter  [out_channels, kernel_h, kernel_w, PackedWords(channels_in)]  (OHWI,
//           each tap padded to whole words; see UnpackCompactFilter)
//   output  [batch, out_h, out_w, out_channels]                     float32
//
// For every output pixel and channel the kernel computes the +-1 dot product of
// the receptive field with the filter, then the output transform
//     y = multiplier[c] * dot + bias[c],   optionally y = max(y, 0)  (fused ReLU)
// which is where a following BatchNormalization folds in.
//
// Padding ("SAME", TensorFlow's geometry: pad_top = total / 2) comes in two kinds:
//   pad_value = 1: padded pixels are +1 (zero bits). They take part in the dot
//     product like real pixels: a tap contributes C - 2 * popcount(w_tap).
//   pad_value = 0: padded pixels are 0, so they contribute nothing; the dot is
//     taken over the valid taps only, K_valid = C * (number of in-bounds taps).
// "EXPLICIT" padding gives the rows and columns padded on each side instead
// (explicit_pads; any sizes >= 0, as TensorFlow's EXPLICIT padding), with the
// same two pad values. Every kernel reads only pad_top, pad_left, out_h and
// out_w, so it runs any padding. A window may then lie wholly in the padding:
// its dot is 0 with pad_value 0 (no tap counts) and sum_t popcount terms with
// pad_value 1, as for any other padded tap. The converter builds binary
// transposed convolutions from such convs (one per stride phase, see
// converter/lowbit_converter/lower_conv_transpose.py).
#ifndef LOWBIT_CORE_BCONV2D_H_
#define LOWBIT_CORE_BCONV2D_H_

#include <cstddef>
#include <cstdint>
#include <new>
#include <string>
#include <vector>

#include "custom_ops/core/kernel_table.h"
#include "custom_ops/core/types.h"

namespace lowbit {

// Allocator of storage that starts on a 64-byte boundary: a cache line, and
// one AVX-512 vector. The SIMD kernels load the prepared filter a whole vector
// at a time, and with malloc's 16-byte alignment (large blocks come from mmap,
// 16 bytes past a page) every zmm load of it straddled two cache lines: two
// L1 accesses per load, and on a batch-1 dense layer, which loads one filter
// vector per XOR + popcount + add, that was the bottleneck.
template <class T>
struct CacheAlignedAllocator {
  using value_type = T;
  static constexpr std::align_val_t kAlignment{64};
  CacheAlignedAllocator() = default;
  template <class U>
  CacheAlignedAllocator(const CacheAlignedAllocator<U>&) {}  // NOLINT: rebinding
  T* allocate(std::size_t n) {
    return static_cast<T*>(::operator new(n * sizeof(T), kAlignment));
  }
  void deallocate(T* p, std::size_t) { ::operator delete(p, kAlignment); }
  template <class U>
  bool operator==(const CacheAlignedAllocator<U>&) const {
    return true;
  }
  template <class U>
  bool operator!=(const CacheAlignedAllocator<U>&) const {
    return false;
  }
};

struct BConv2DParams {
  // Set by the caller.
  std::int64_t batch = 0;
  std::int64_t in_h = 0, in_w = 0;
  std::int64_t channels_in = 0;  // real channel count (not words)
  std::int64_t out_channels = 0;
  std::int64_t kernel_h = 0, kernel_w = 0;
  std::int64_t stride_h = 1, stride_w = 1;
  std::int64_t dilation_h = 1, dilation_w = 1;
  Padding padding = Padding::kValid;
  // Padding::kExplicit only (all 0 otherwise): rows / columns padded on each side.
  struct {
    std::int64_t top = 0, bottom = 0, left = 0, right = 0;
  } explicit_pads;
  int pad_value = 0;  // 0 or 1; only meaningful with padding (SAME or EXPLICIT)
  Activation activation = Activation::kNone;

  // Filled in by ComputeBConv2DGeometry.
  std::int64_t out_h = 0, out_w = 0;
  std::int64_t pad_top = 0, pad_left = 0;

  std::int64_t words() const { return PackedWords(channels_in); }
};

// Validates the fields that come from op attributes / custom options:
// channels_in, kernel size, strides and dilations in [1, 2^30], pad_value in
// {0, 1}, explicit pads in [0, 2^30] and all 0 unless padding is EXPLICIT, and kernel_h * kernel_w * channels_in <= 2^24 (so that every dot
// product is exact in int32 and in float, and sizes derived from these fields
// cannot overflow).
Status CheckBConv2DOptions(const BConv2DParams& params);

// CheckBConv2DOptions, then the shape fields (batch >= 0, positive sizes, a
// window that fits for VALID), and computes the output size and padding. Every
// kernel requires a params struct that passed this.
Status ComputeBConv2DGeometry(BConv2DParams* params);

// TensorFlow's (and TFLite's) output size and leading padding for one spatial
// axis of a convolution whose dilated kernel spans `effective_kernel` inputs;
// with EXPLICIT padding, `before` and `after` rows are padded (0 outputs when
// the padded input is shorter than the window). ComputeBConv2DGeometry's, and
// the int8 conv's (core/int8_conv2d.h).
void ConvAxisGeometry(Padding padding, std::int64_t in, std::int64_t effective_kernel,
                      std::int64_t stride, std::int64_t before, std::int64_t after,
                      std::int64_t* out, std::int64_t* pad_before);

// Parsing helpers shared by both shells for their string attributes/options.
// "SAME", "VALID"; "EXPLICIT" too when `allow_explicit` (LowbitBconv2d's own).
Status ParsePadding(const std::string& text, Padding* padding, bool allow_explicit = false);
Status ParseActivation(const std::string& text, Activation* activation);

// The `epilogue` attribute / option of LowbitBconv2d: which BConv2DEpilogue
// steps its float output gets, "none", "affine" (post_multiplier, post_bias),
// "add" (residual) or "affine_add" (both), and how many op inputs after bias
// carry them (in the order post_multiplier, post_bias, residual).
struct EpilogueKind {
  bool affine = false;
  bool add = false;
  // The `output_activation` option "RELU": a ReLU after the epilogue, for an
  // int8 output only (applied in the quantization, core/int8_io.h).
  bool output_relu = false;
  int inputs() const { return (affine ? 2 : 0) + (add ? 1 : 0); }
};
Status ParseEpilogue(const std::string& text, EpilogueKind* kind);

// The kernel paths (BConv2DKernel, SelectBConv2DKernel, BConv2DKernelName,
// LOWBIT_KERNEL) are rows of the kernel table, core/kernel_table.h.

// Filters are stored and exchanged (TF op input, .tflite constant) in the
// compact layout: per output channel, the kernel_h * kernel_w * channels_in
// bits in (ky, kx, c) order packed back to back, i.e. the bit-packing of the
// flattened OHWI kernel, [out_channels, CompactFilterWords(...)]. That costs
// 1 bit per weight whatever the channel count. The kernels want every tap to
// start on a word boundary; UnpackCompactFilter converts (a cheap step: one
// word operation per output word, against taps * words * pixels per channel
// in the convolution itself).
std::int64_t CompactFilterWords(std::int64_t kernel_h, std::int64_t kernel_w,
                                std::int64_t channels_in);

// compact: [out_channels, CompactFilterWords(kernel_h, kernel_w, channels_in)]
// per_tap: [out_channels, kernel_h, kernel_w, PackedWords(channels_in)] out,
//          padding bits zero.
void UnpackCompactFilter(const BConv2DParams& params, const PackedWord* compact,
                         PackedWord* per_tap);

// A filter laid out once for one kernel ("prepared"): the per-tap layout
// above for the reference and blocked kernels; for the SIMD kernels the
// channel-interleaved layout (x86)
//     blocked[block][ky][kx][word][lane],  lane in [0, BlockWidth(kernel)),
// or, for a channel-major path (KernelPath::channel_major, NEON), the per-tap
// layout with out_channels rounded up to whole blocks,
//     blocked[block][lane][ky][kx][word]
// (aarch64 with a whole number of word pairs per pixel: 4-channel groups with
// their words interleaved in pairs, see NeonWordPairs in bconv2d_kernels.h),
// output channel block * BlockWidth + lane, channels past out_channels all
// zero bits; either way plus tap_popcounts[block][ky][kx][lane] = popcount of that
// channel's tap (what a skipped padded tap adds with pad_value 1, see
// bconv2d_simd.h).
// Building it costs about one pass over the filter; the TFLite shell keeps it
// across invocations and the TF shell keeps it while the filter is unchanged
// (tf/binary_kernel_util.h: the same input tensor, or SameSource comparing the
// compact words it was built from).
class BConv2DFilter {
 public:
  // `params` needs the options (CheckBConv2DOptions) and out_channels.
  void Prepare(BConv2DKernel kernel, const BConv2DParams& params, const PackedWord* compact);
  // The same, from a per-tap filter (see UnpackCompactFilter).
  void PrepareFromPerTap(BConv2DKernel kernel, const BConv2DParams& params,
                         const PackedWord* per_tap);

  // True when this filter was prepared for `kernel` and the filter geometry
  // of `params` (out_channels, kernel size, channels_in).
  bool Matches(BConv2DKernel kernel, const BConv2DParams& params) const;
  // Matches(), and the compact words given to Prepare equal `compact`.
  bool SameSource(BConv2DKernel kernel, const BConv2DParams& params,
                  const PackedWord* compact) const;

  BConv2DKernel kernel() const { return kernel_; }
  // Output channels per block of the interleaved layout (0: per-tap layout).
  static int BlockWidth(BConv2DKernel kernel);
  const PackedWord* data() const { return data_.data(); }
  const std::int32_t* tap_popcounts() const { return tap_popcounts_.data(); }

 private:
  void Layout(BConv2DKernel kernel, const BConv2DParams& params, const PackedWord* per_tap);

  BConv2DKernel kernel_ = BConv2DKernel::kReference;
  bool prepared_ = false;
  std::int64_t out_channels_ = 0, kernel_h_ = 0, kernel_w_ = 0, channels_in_ = 0;
  std::vector<PackedWord> source_;  // compact words (empty if from per-tap)
  std::vector<PackedWord, CacheAlignedAllocator<PackedWord>> data_;  // 64-byte aligned
  std::vector<std::int32_t> tap_popcounts_;
};

// What may follow the output transform y = act(float(dot) * multiplier[c] +
// bias[c]) of a float output, fused so that the layers a converted model has
// after a binary conv (a BatchNormalization after its ReLU, a residual Add)
// cost no extra pass over the output:
//     y = y * post_multiplier[c] + post_bias[c]    when post_multiplier is set
//     y = y + residual[i]                          when residual is set
// i the index of the output value itself (the residual has the output's
// shape). Each step is one float32 rounding in this order (no fused
// multiply-add: the core is built with -ffp-contract=off), which is what the
// separate TFLite MUL, ADD and ADD it replaces compute.
//
// The residual may instead be an int8 tensor of a quantized model (codes q,
// real value scale * (q - zero_point)): its real values are added,
//     y = y + float(q[i] - zero_point) * scale
// (the integer difference is exact in float; one rounding), exactly what
// TFLite's DEQUANTIZE would have written for the float residual. The kernels
// read the codes where they read a float residual, with no dequantized copy
// (but NEON's, which gets one: core/bconv2d.cc, RunSimd).
struct BConv2DEpilogue {
  const float* post_multiplier = nullptr;  // [out_channels], with post_bias
  const float* post_bias = nullptr;        // [out_channels]
  const float* residual = nullptr;         // the output's shape
  // An int8 residual of the output's shape (with residual nullptr).
  const std::int8_t* residual_int8 = nullptr;
  float residual_scale = 1.0f;
  std::int32_t residual_zero_point = 0;

  // The real value of the int8 residual's code at `index`.
  float ResidualInt8(std::int64_t index) const {
    return static_cast<float>(static_cast<std::int32_t>(residual_int8[index]) -
                              residual_zero_point) *
           residual_scale;
  }

  // y after the epilogue, for the value at `index` of output channel c.
  float Apply(float y, std::int64_t c, std::int64_t index) const {
    if (post_multiplier != nullptr) {
      y = y * post_multiplier[c];
      y = y + post_bias[c];
    }
    if (residual != nullptr) y = y + residual[index];
    if (residual_int8 != nullptr) y = y + ResidualInt8(index);
    return y;
  }
};

// Runs the binary convolution with the kernel the filter was prepared for.
// `params` must have passed ComputeBConv2DGeometry and `filter.Matches` it.
// The padding bits of the last input word are ignored (masked), so any
// packed input is accepted.
void BConv2D(const BConv2DParams& params, const PackedWord* input, const BConv2DFilter& filter,
             const float* multiplier, const float* bias, float* output,
             ParallelExecutor& executor, const BConv2DEpilogue& epilogue = {});

// The same with a per-tap filter (UnpackCompactFilter); the SIMD kernels
// re-lay it on every call.
void BConv2D(BConv2DKernel kernel, const BConv2DParams& params,
             const PackedWord* input, const PackedWord* filter,
             const float* multiplier, const float* bias, float* output,
             ParallelExecutor& executor, const BConv2DEpilogue& epilogue = {});

}  // namespace lowbit

#endif  // LOWBIT_CORE_BCONV2D_H_
