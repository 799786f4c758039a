#include "custom_ops/core/bmaxpool.h"

#include <algorithm>
#include <string>

namespace lowbit {
namespace {

constexpr std::int64_t kMaxDim = std::int64_t{1} << 30;

Status Range(const char* name, std::int64_t v, std::int64_t lo) {
  if (v < lo || v > kMaxDim) {
    return Status::Error(std::string(name) + " must be in [" + std::to_string(lo) + ", " +
                         std::to_string(kMaxDim) + "], got " + std::to_string(v));
  }
  return Status::Ok();
}

void Axis(Padding padding, std::int64_t in, std::int64_t k, std::int64_t stride,
          std::int64_t* out, std::int64_t* pad_before) {
  if (padding == Padding::kValid) {
    *out = in >= k ? (in - k) / stride + 1 : 0;
    *pad_before = 0;
  } else {
    *out = (in + stride - 1) / stride;
    const std::int64_t total = (*out - 1) * stride + k - in;
    *pad_before = total > 0 ? total / 2 : 0;
  }
}

}  // namespace

Status CheckBMaxPool2DOptions(const BMaxPool2DParams& p) {
  const struct {
    const char* name;
    std::int64_t value;
  } options[] = {{"channels", p.channels}, {"filter_h", p.filter_h}, {"filter_w", p.filter_w},
                 {"stride_h", p.stride_h}, {"stride_w", p.stride_w}};
  for (const auto& o : options) {
    Status s = Range(o.name, o.value, 1);
    if (!s.ok) return s;
  }
  return Status::Ok();
}

Status ComputeBMaxPool2DGeometry(BMaxPool2DParams* p) {
  Status s = CheckBMaxPool2DOptions(*p);
  if (!s.ok) return s;
  if (!(s = Range("batch", p->batch, 0)).ok) return s;
  if (!(s = Range("input height", p->in_h, 1)).ok) return s;
  if (!(s = Range("input width", p->in_w, 1)).ok) return s;
  Axis(p->padding, p->in_h, p->filter_h, p->stride_h, &p->out_h, &p->pad_top);
  Axis(p->padding, p->in_w, p->filter_w, p->stride_w, &p->out_w, &p->pad_left);
  if (p->out_h == 0 || p->out_w == 0) {
    return Status::Error("VALID pooling window of " + std::to_string(p->filter_h) + "x" +
                         std::to_string(p->filter_w) + " does not fit the input of " +
                         std::to_string(p->in_h) + "x" + std::to_string(p->in_w));
  }
  return Status::Ok();
}

void BMaxPool2D(const BMaxPool2DParams& p, const PackedWord* input, PackedWord* output,
                ParallelExecutor& executor) {
  const std::int64_t words = p.words();
  const PackedWord tail = TailMask(p.channels);
  const std::int64_t rows = p.batch * p.out_h;
  executor.ParallelFor(rows, p.out_w * p.filter_h * p.filter_w * words,
                       [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t r = begin; r < end; ++r) {
      const std::int64_t n = r / p.out_h, oy = r % p.out_h;
      const std::int64_t y0 = std::max<std::int64_t>(oy * p.stride_h - p.pad_top, 0);
      const std::int64_t y1 = std::min(oy * p.stride_h - p.pad_top + p.filter_h, p.in_h);
      for (std::int64_t ox = 0; ox < p.out_w; ++ox) {
        const std::int64_t x0 = std::max<std::int64_t>(ox * p.stride_w - p.pad_left, 0);
        const std::int64_t x1 = std::min(ox * p.stride_w - p.pad_left + p.filter_w, p.in_w);
        PackedWord* out = output + (r * p.out_w + ox) * words;
        // An empty window (impossible with TF geometry) would give all +1.
        const bool empty = y0 >= y1 || x0 >= x1;
        for (std::int64_t j = 0; j < words; ++j) out[j] = empty ? 0u : ~PackedWord{0};
        for (std::int64_t y = y0; y < y1; ++y) {
          for (std::int64_t x = x0; x < x1; ++x) {
            const PackedWord* in = input + ((n * p.in_h + y) * p.in_w + x) * words;
            for (std::int64_t j = 0; j < words; ++j) out[j] &= in[j];
          }
        }
        out[words - 1] &= tail;
      }
    }
  });
}

}  // namespace lowbit
