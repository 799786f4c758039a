#include "custom_ops/core/multibit_conv2d.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "custom_ops/core/bitpack.h"

namespace lowbit {
namespace {

constexpr std::int64_t kMaxWeightPlanes = 64;
constexpr std::int64_t kMaxShifts = 64;
constexpr std::int64_t kMaxActivationBits = 16;
// Per-image scratch bound (elements of each buffer): keeps allocations sane
// and every index product far from overflow.
constexpr std::int64_t kMaxScratchElements = std::int64_t{1} << 30;

std::string Str(std::int64_t v) { return std::to_string(v); }

// DoReFa's integer level q = round_half_even(fl(clip(x, 0, 1) * n)), NaN -> 0.
// (nearbyint rounds half to even in the default rounding mode, as tf.round.)
inline std::uint32_t DoReFaLevel(float x, float levels) {
  const float clipped = x > 0.0f ? (x < 1.0f ? x : 1.0f) : 0.0f;
  return static_cast<std::uint32_t>(std::nearbyint(clipped * levels));
}

// ABC-Net plane bit of x for shift v: 0 (+1) iff fl(x + v) >= 0.5 (NaN: 1, -1).
inline PackedWord AbcPlaneBit(float x, float shift) {
  return static_cast<PackedWord>(!(x + shift >= 0.5f));
}

// DoReFa's levels n = 2^k - 1 (exact in float for k <= 16).
inline float DoReFaLevels(const MultibitConv2DParams& params) {
  return static_cast<float>((std::int64_t{1} << params.activation_bits) - 1);
}

}  // namespace

Status ParseActivationPlanes(const std::string& text, ActivationPlanes* mode) {
  if (text == "sign") {
    *mode = ActivationPlanes::kSign;
  } else if (text == "abc") {
    *mode = ActivationPlanes::kAbc;
  } else if (text == "dorefa") {
    *mode = ActivationPlanes::kDoReFa;
  } else {
    return Status::Error("activation_mode must be \"sign\", \"abc\" or \"dorefa\", got \"" +
                         text + "\"");
  }
  return Status::Ok();
}

std::int64_t MultibitConv2DParams::activation_planes() const {
  switch (activation_mode) {
    case ActivationPlanes::kSign: return 1;
    case ActivationPlanes::kAbc: return num_shifts;
    case ActivationPlanes::kDoReFa: return activation_bits + 1;
  }
  return 0;
}

Status CheckMultibitConv2DOptions(const MultibitConv2DParams& p) {
  Status s = CheckBConv2DOptions(p.conv);
  if (!s.ok) return s;
  if (p.weight_planes < 1 || p.weight_planes > kMaxWeightPlanes) {
    return Status::Error("the number of weight planes must be in [1, " + Str(kMaxWeightPlanes) +
                         "], got " + Str(p.weight_planes));
  }
  switch (p.activation_mode) {
    case ActivationPlanes::kSign:
      if (p.num_shifts != 0 || p.activation_bits != 0) {
        return Status::Error("activation_mode \"sign\" takes no shifts and activation_bits 0, got " +
                             Str(p.num_shifts) + " shifts and activation_bits " +
                             Str(p.activation_bits));
      }
      break;
    case ActivationPlanes::kAbc:
      if (p.num_shifts < 1 || p.num_shifts > kMaxShifts) {
        return Status::Error("activation_mode \"abc\" needs 1 to " + Str(kMaxShifts) +
                             " shifts, got " + Str(p.num_shifts));
      }
      if (p.activation_bits != 0) {
        return Status::Error("activation_mode \"abc\" takes activation_bits 0, got " +
                             Str(p.activation_bits));
      }
      break;
    case ActivationPlanes::kDoReFa:
      if (p.activation_bits < 1 || p.activation_bits > kMaxActivationBits) {
        return Status::Error("activation_bits must be in [1, " + Str(kMaxActivationBits) +
                             "] for activation_mode \"dorefa\", got " + Str(p.activation_bits));
      }
      if (p.num_shifts != 0) {
        return Status::Error("activation_mode \"dorefa\" takes no shifts, got " +
                             Str(p.num_shifts));
      }
      break;
  }
  return Status::Ok();
}

Status ComputeMultibitConv2DGeometry(MultibitConv2DParams* p) {
  Status s = CheckMultibitConv2DOptions(*p);
  if (!s.ok) return s;
  s = ComputeBConv2DGeometry(&p->conv);
  if (!s.ok) return s;
  // ComputeBConv2DGeometry bounds every dimension by 2^30, so each product
  // below is checked before the next factor can overflow.
  const std::int64_t planes = p->activation_planes();
  const std::int64_t channels = p->weight_planes * p->conv.out_channels;
  const std::int64_t in_pixels = p->conv.in_h * p->conv.in_w;
  const std::int64_t out_pixels = p->conv.out_h * p->conv.out_w;
  if (channels > kMaxScratchElements || in_pixels > kMaxScratchElements ||
      out_pixels > kMaxScratchElements ||
      planes * in_pixels > kMaxScratchElements / p->conv.words() ||
      (out_pixels > 0 && planes * out_pixels > kMaxScratchElements / channels)) {
    return Status::Error("the plane buffers of one image (" + Str(planes) + " activation planes x " +
                         Str(p->weight_planes) + " weight planes x " + Str(p->conv.out_channels) +
                         " channels over " + Str(p->conv.out_h) + "x" + Str(p->conv.out_w) +
                         " pixels) exceed the supported size");
  }
  return Status::Ok();
}

BConv2DParams PlaneConvParams(const MultibitConv2DParams& p) {
  BConv2DParams conv = p.conv;
  conv.batch = p.activation_planes();
  conv.out_channels = p.weight_planes * p.conv.out_channels;
  conv.activation = Activation::kNone;
  return conv;
}

void PackActivationPlanes(BConv2DKernel kernel, const MultibitConv2DParams& params,
                          const float* input, std::int64_t pixels, const float* shifts,
                          PackedWord* planes, ParallelExecutor& executor) {
  const std::int64_t channels = params.conv.channels_in;
  const std::int64_t words = params.conv.words();
  if (params.activation_mode == ActivationPlanes::kSign) {
    BitpackRows(kernel, input, pixels, channels, planes, executor);
    return;
  }
  const std::int64_t count = params.activation_planes();
  const std::int64_t plane_stride = pixels * words;
  const bool abc = params.activation_mode == ActivationPlanes::kAbc;
  const float levels = DoReFaLevels(params);
  // Word by word: the up to 32 values of a word are read once and each plane's
  // word is built with branch-free compares and shifts.
  executor.ParallelFor(pixels, channels * count, [&](std::int64_t begin, std::int64_t end) {
    std::uint32_t level[kBitsPerWord];
    for (std::int64_t pixel = begin; pixel < end; ++pixel) {
      const float* x = input + pixel * channels;
      for (std::int64_t w = 0; w < words; ++w) {
        const float* v = x + w * kBitsPerWord;
        const int n = static_cast<int>(std::min<std::int64_t>(kBitsPerWord,
                                                              channels - w * kBitsPerWord));
        PackedWord* out = planes + pixel * words + w;
        if (abc) {
          // Plane p: +1 iff fl(x + v_p) >= 0.5 (NaN compares false: -1).
          for (std::int64_t p = 0; p < count; ++p) {
            const float shift = shifts[p];
            PackedWord word = 0;
            for (int bit = 0; bit < n; ++bit) word |= AbcPlaneBit(v[bit], shift) << bit;
            out[p * plane_stride] = word;
          }
          continue;
        }
        // DoReFa: planes p < k hold bit p of q (set: +1, packed 0); plane k is
        // +1 everywhere (all zero bits).
        for (int bit = 0; bit < n; ++bit) level[bit] = DoReFaLevel(v[bit], levels);
        for (std::int64_t p = 0; p + 1 < count; ++p) {
          PackedWord word = 0;
          for (int bit = 0; bit < n; ++bit) word |= ((~level[bit] >> p) & 1u) << bit;
          out[p * plane_stride] = word;
        }
        out[(count - 1) * plane_stride] = 0;
      }
    }
  });
}

Status CheckMultibitConv2DTypes(const MultibitConv2DParams& params, MultibitInputType input) {
  if (input == MultibitInputType::kPacked &&
      params.activation_mode != ActivationPlanes::kSign) {
    return Status::Error(
        "a packed (int32) input is the single plane of activation_mode \"sign\"; "
        "\"abc\" and \"dorefa\" read float32 or int8 values");
  }
  return Status::Ok();
}

void PackInt8ActivationPlanes(const MultibitConv2DParams& params, const std::int8_t* input,
                              const Int8Quantization& quantization, std::int64_t pixels,
                              const float* shifts, std::uint64_t* code_planes,
                              PackedWord* planes, ParallelExecutor& executor) {
  const std::int64_t channels = params.conv.channels_in;
  if (params.activation_mode == ActivationPlanes::kSign) {
    BitpackInt8Rows(input, pixels, channels, quantization.zero_point, planes, executor);
    return;
  }
  // The plane bits of each code's real value, by the float path's rules:
  // bit p of code_planes[q + 128] is plane p's packed bit (P <= 64 planes).
  const std::int64_t count = params.activation_planes();
  const bool abc = params.activation_mode == ActivationPlanes::kAbc;
  const float levels = DoReFaLevels(params);
  for (int q = -128; q < 128; ++q) {
    const float x = DequantizeInt8(static_cast<std::int8_t>(q), quantization);  // DEQUANTIZE's
    std::uint64_t bits = 0;
    if (abc) {
      for (std::int64_t p = 0; p < count; ++p) {
        bits |= static_cast<std::uint64_t>(AbcPlaneBit(x, shifts[p])) << p;
      }
    } else {
      // Planes p < k: bit p of the level (set: +1, packed 0); plane k: +1 (0).
      const std::uint64_t level = DoReFaLevel(x, levels);
      bits = ~level & ((std::uint64_t{1} << (count - 1)) - 1);
    }
    code_planes[q + 128] = bits;
  }
  const std::int64_t words = params.conv.words();
  const std::int64_t plane_stride = pixels * words;
  executor.ParallelFor(pixels, channels * count, [&](std::int64_t begin, std::int64_t end) {
    std::uint64_t bits[kBitsPerWord];
    for (std::int64_t pixel = begin; pixel < end; ++pixel) {
      const std::int8_t* x = input + pixel * channels;
      for (std::int64_t w = 0; w < words; ++w) {
        const std::int8_t* v = x + w * kBitsPerWord;
        const int n = static_cast<int>(std::min<std::int64_t>(kBitsPerWord,
                                                              channels - w * kBitsPerWord));
        for (int bit = 0; bit < n; ++bit) bits[bit] = code_planes[v[bit] + 128];
        PackedWord* out = planes + pixel * words + w;
        for (std::int64_t p = 0; p < count; ++p) {
          PackedWord word = 0;
          for (int bit = 0; bit < n; ++bit) {
            word |= static_cast<PackedWord>((bits[bit] >> p) & 1u) << bit;
          }
          out[p * plane_stride] = word;
        }
      }
    }
  });
}

void MultibitConv2D(const MultibitConv2DParams& params, const MultibitInput& input,
                    const float* shifts, const BConv2DFilter& filter, const float* alphas,
                    const float* betas, const float* bias, const MultibitOutput& output,
                    MultibitConv2DScratch* scratch, ParallelExecutor& executor) {
  const BConv2DParams conv = PlaneConvParams(params);
  const std::int64_t planes = conv.batch;
  const std::int64_t cout = params.conv.out_channels;
  const std::int64_t channels = conv.out_channels;  // M * C_out
  const std::int64_t in_pixels = conv.in_h * conv.in_w;
  const std::int64_t out_pixels = conv.out_h * conv.out_w;
  const std::int64_t in_values = in_pixels * conv.channels_in;  // per image
  const bool packed_input = input.type == MultibitInputType::kPacked;
  if (!packed_input) {
    scratch->planes.resize(static_cast<std::size_t>(planes * in_pixels * conv.words()));
  }
  if (input.type == MultibitInputType::kInt8) scratch->code_planes.resize(256);
  scratch->dots.resize(static_cast<std::size_t>(planes * out_pixels * channels));
  scratch->ones.assign(static_cast<std::size_t>(channels), 1.0f);
  scratch->zeros.assign(static_cast<std::size_t>(channels), 0.0f);
  // The float output y of one image: the output itself, or scratch to be
  // quantized / packed.
  const bool float_output = output.type == OutputType::kFloat;
  if (!float_output) scratch->values.resize(static_cast<std::size_t>(out_pixels * cout));
  const bool relu = params.conv.activation == Activation::kRelu;
  const std::int64_t weight_planes = params.weight_planes;

  for (std::int64_t image = 0; image < params.conv.batch; ++image) {
    const PackedWord* image_planes = scratch->planes.data();
    switch (input.type) {
      case MultibitInputType::kFloat:
        PackActivationPlanes(filter.kernel(), params,
                             static_cast<const float*>(input.data) + image * in_values,
                             in_pixels, shifts, scratch->planes.data(), executor);
        break;
      case MultibitInputType::kInt8:
        PackInt8ActivationPlanes(params,
                                 static_cast<const std::int8_t*>(input.data) + image * in_values,
                                 input.quantization, in_pixels, shifts,
                                 scratch->code_planes.data(), scratch->planes.data(), executor);
        break;
      case MultibitInputType::kPacked:  // kSign: the one plane
        image_planes = static_cast<const PackedWord*>(input.data) + image * in_pixels * conv.words();
        break;
    }
    BConv2D(conv, image_planes, filter, scratch->ones.data(), scratch->zeros.data(),
            scratch->dots.data(), executor);
    const float* dots = scratch->dots.data();
    float* out = float_output ? static_cast<float*>(output.data) + image * out_pixels * cout
                              : scratch->values.data();
    // Per pixel, vectorised over the channels, each output summed in the
    // documented order: inner = sum_m alphas[m] * dot (m ascending, from 0),
    // acc = sum_p betas[p] * inner (p ascending, from 0), y = acc + bias.
    executor.ParallelFor(out_pixels, planes * channels, [&](std::int64_t begin, std::int64_t end) {
      std::vector<float> acc(static_cast<std::size_t>(cout)), inner(acc.size());
      for (std::int64_t pixel = begin; pixel < end; ++pixel) {
        std::fill(acc.begin(), acc.end(), 0.0f);
        for (std::int64_t p = 0; p < planes; ++p) {
          const float* d = dots + (p * out_pixels + pixel) * channels;
          std::fill(inner.begin(), inner.end(), 0.0f);
          for (std::int64_t m = 0; m < weight_planes; ++m) {
            const float* a = alphas + m * cout;
            const float* dm = d + m * cout;
            for (std::int64_t c = 0; c < cout; ++c) inner[c] += a[c] * dm[c];
          }
          const float beta = betas[p];
          for (std::int64_t c = 0; c < cout; ++c) acc[c] += beta * inner[c];
        }
        float* y = out + pixel * cout;
        for (std::int64_t c = 0; c < cout; ++c) {
          float value = acc[c] + bias[c];
          if (relu && value < 0.0f) value = 0.0f;  // as the binary kernels: NaN stays NaN
          y[c] = value;
        }
      }
    });
    if (output.type == OutputType::kInt8) {
      QuantizeInt8Values(out, out_pixels * cout, output.quantization,
                         static_cast<std::int8_t*>(output.data) + image * out_pixels * cout,
                         executor);
    } else if (output.type == OutputType::kBitpacked) {
      BitpackRows(filter.kernel(), out, out_pixels, cout,
                  static_cast<PackedWord*>(output.data) + image * out_pixels * PackedWords(cout),
                  executor);
    }
  }
}

}  // namespace lowbit
