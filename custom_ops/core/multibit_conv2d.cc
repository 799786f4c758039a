#include "custom_ops/core/multibit_conv2d.h"

#include <cmath>
#include <string>

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

// Bits of the activation planes of one input value, plane p in bit p (1
// meaning -1, as in packed words).
struct PlaneBits {
  ActivationPlanes mode;
  std::int64_t planes;
  const float* shifts;
  float levels;  // n = 2^k - 1 (kDoReFa)

  std::uint32_t operator()(float x) const {
    std::uint32_t bits = 0;
    if (mode == ActivationPlanes::kAbc) {
      for (std::int64_t p = 0; p < planes; ++p) {
        // +1 iff fl(x + v) >= 0.5; NaN compares false and gives -1.
        if (!(x + shifts[p] >= 0.5f)) bits |= std::uint32_t{1} << p;
      }
      return bits;
    }
    // kDoReFa. clip(x, 0, 1) with NaN -> 0, then round half to even (the
    // default rounding mode; tf.round rounds half to even too).
    const float clipped = x > 0.0f ? (x < 1.0f ? x : 1.0f) : 0.0f;
    const auto q = static_cast<std::uint32_t>(std::nearbyint(clipped * levels));
    // Planes p < k: bit p of q set -> +1 (packed 0). Plane k: always +1.
    const std::uint32_t low = (std::uint32_t{1} << (planes - 1)) - 1u;
    return ~q & low;
  }
};

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

void PackActivationPlanes(const MultibitConv2DParams& params, const float* input,
                          std::int64_t pixels, const float* shifts, PackedWord* planes,
                          ParallelExecutor& executor) {
  const std::int64_t channels = params.conv.channels_in;
  const std::int64_t words = params.conv.words();
  if (params.activation_mode == ActivationPlanes::kSign) {
    BitpackRows(input, pixels, channels, planes, executor);
    return;
  }
  const PlaneBits bits_of{params.activation_mode, params.activation_planes(), shifts,
                          static_cast<float>((std::int64_t{1} << params.activation_bits) - 1)};
  const std::int64_t count = params.activation_planes();
  const std::int64_t plane_stride = pixels * words;
  executor.ParallelFor(pixels, channels * count, [&](std::int64_t begin, std::int64_t end) {
    PackedWord word[kMaxShifts + 1];  // one word under construction per plane
    for (std::int64_t pixel = begin; pixel < end; ++pixel) {
      const float* x = input + pixel * channels;
      for (std::int64_t w = 0; w < words; ++w) {
        for (std::int64_t p = 0; p < count; ++p) word[p] = 0;
        const std::int64_t first = w * kBitsPerWord;
        const std::int64_t last = first + kBitsPerWord < channels ? first + kBitsPerWord : channels;
        for (std::int64_t c = first; c < last; ++c) {
          std::uint32_t b = bits_of(x[c]);
          const int bit = static_cast<int>(c - first);
          for (std::int64_t p = 0; b != 0; ++p, b >>= 1) word[p] |= (b & 1u) << bit;
        }
        for (std::int64_t p = 0; p < count; ++p) {
          planes[p * plane_stride + pixel * words + w] = word[p];
        }
      }
    }
  });
}

void MultibitConv2D(const MultibitConv2DParams& params, const float* input, const float* shifts,
                    const BConv2DFilter& filter, const float* alphas, const float* betas,
                    const float* bias, float* output, MultibitConv2DScratch* scratch,
                    ParallelExecutor& executor) {
  const BConv2DParams conv = PlaneConvParams(params);
  const std::int64_t planes = conv.batch;
  const std::int64_t cout = params.conv.out_channels;
  const std::int64_t channels = conv.out_channels;  // M * C_out
  const std::int64_t in_pixels = conv.in_h * conv.in_w;
  const std::int64_t out_pixels = conv.out_h * conv.out_w;
  scratch->planes.resize(static_cast<std::size_t>(planes * in_pixels * conv.words()));
  scratch->dots.resize(static_cast<std::size_t>(planes * out_pixels * channels));
  scratch->ones.assign(static_cast<std::size_t>(channels), 1.0f);
  scratch->zeros.assign(static_cast<std::size_t>(channels), 0.0f);
  const bool relu = params.conv.activation == Activation::kRelu;
  const std::int64_t weight_planes = params.weight_planes;

  for (std::int64_t image = 0; image < params.conv.batch; ++image) {
    PackActivationPlanes(params, input + image * in_pixels * conv.channels_in, in_pixels, shifts,
                         scratch->planes.data(), executor);
    BConv2D(conv, scratch->planes.data(), filter, scratch->ones.data(), scratch->zeros.data(),
            scratch->dots.data(), executor);
    const float* dots = scratch->dots.data();
    float* out = output + image * out_pixels * cout;
    executor.ParallelFor(out_pixels, planes * channels, [&](std::int64_t begin, std::int64_t end) {
      for (std::int64_t pixel = begin; pixel < end; ++pixel) {
        for (std::int64_t c = 0; c < cout; ++c) {
          float acc = 0.0f;
          for (std::int64_t p = 0; p < planes; ++p) {
            const float* d = dots + (p * out_pixels + pixel) * channels + c;
            float inner = 0.0f;
            for (std::int64_t m = 0; m < weight_planes; ++m) {
              inner += alphas[m * cout + c] * d[m * cout];
            }
            acc += betas[p] * inner;
          }
          float y = acc + bias[c];
          if (relu && y < 0.0f) y = 0.0f;  // as the binary kernels: NaN stays NaN
          out[pixel * cout + c] = y;
        }
      }
    });
  }
}

}  // namespace lowbit
