#include "custom_ops/core/fastfood.h"

#include <algorithm>
#include <limits>
#include <string>
#include <vector>

namespace lowbit {
namespace {

std::string Str(std::int64_t v) { return std::to_string(v); }

// One butterfly stage on a group of 2h values: (lo[i], hi[i]) -> (lo[i] + hi[i],
// lo[i] - hi[i]). The halves never overlap, which __restrict tells the
// compiler so that the loop vectorises without a run-time alias check.
void Butterflies(float* __restrict lo, float* __restrict hi, std::int64_t h) {
  for (std::int64_t i = 0; i < h; ++i) {
    const float a = lo[i], b = hi[i];
    lo[i] = a + b;
    hi[i] = a - b;
  }
}

// Stages h and 2h together on a group of 4h values, quarters q0..q3, in
// registers: stage h maps (q0, q1) -> (q0 + q1, q0 - q1) and (q2, q3) likewise,
// then stage 2h pairs q0 with q2 and q1 with q3. Exactly the additions of the
// two stages in their order (so the same bits), with half the loads and stores.
void Butterflies2(float* __restrict q0, float* __restrict q1, float* __restrict q2,
                  float* __restrict q3, std::int64_t h) {
  for (std::int64_t i = 0; i < h; ++i) {
    const float s0 = q0[i] + q1[i], d0 = q0[i] - q1[i];
    const float s1 = q2[i] + q3[i], d1 = q2[i] - q3[i];
    q0[i] = s0 + s1;
    q1[i] = d0 + d1;
    q2[i] = s0 - s1;
    q3[i] = d0 - d1;
  }
}

}  // namespace

Status CheckFastfoodParams(const FastfoodParams& p) {
  const std::int64_t n = p.block_size, k = p.blocks;
  if (n < 1 || n > kMaxFastfoodSize || (n & (n - 1)) != 0) {
    return Status::Error("block size n = " + Str(n) + " must be a power of two in [1, " +
                         Str(kMaxFastfoodSize) + "]");
  }
  if (p.input_dim < 1 || p.input_dim > n) {
    return Status::Error("input width d = " + Str(p.input_dim) + " must be in [1, n = " +
                         Str(n) + "] (the input is zero-padded to the block size)");
  }
  if (k < 1 || k > kMaxFastfoodSize / n) {
    return Status::Error("number of blocks k = " + Str(k) + " must be >= 1 with k * n <= " +
                         Str(kMaxFastfoodSize) + " (n = " + Str(n) + ")");
  }
  if (p.units < 1 || p.units > k * n) {
    return Status::Error("units = " + Str(p.units) + " must be in [1, k * n = " + Str(k * n) +
                         "] (k = " + Str(k) + " blocks of n = " + Str(n) + ")");
  }
  // k * n >= units and n >= d, so this bounds every index rows * width.
  if (p.rows < 0 || p.rows > std::numeric_limits<std::int64_t>::max() / (k * n)) {
    return Status::Error("number of rows " + Str(p.rows) + " is negative or too large");
  }
  return Status::Ok();
}

Status CheckFastfoodPermutation(const FastfoodParams& p, const std::int32_t* permutation) {
  const std::int64_t n = p.block_size;
  std::vector<std::int64_t> seen_at(static_cast<std::size_t>(n));
  for (std::int64_t b = 0; b < p.blocks; ++b) {
    std::fill(seen_at.begin(), seen_at.end(), -1);
    const std::int32_t* row = permutation + b * n;
    for (std::int64_t j = 0; j < n; ++j) {
      const std::int64_t v = row[j];
      if (v < 0 || v >= n) {
        return Status::Error("permutation[" + Str(b) + "][" + Str(j) + "] = " + Str(v) +
                             " is out of range [0, n = " + Str(n) + ")");
      }
      if (seen_at[v] >= 0) {
        return Status::Error("permutation row " + Str(b) + " is not a permutation of [0, " +
                             Str(n) + "): value " + Str(v) + " appears at " +
                             Str(seen_at[v]) + " and " + Str(j));
      }
      seen_at[v] = j;
    }
  }
  return Status::Ok();
}

void FastWalshHadamard(float* x, std::int64_t n, std::int64_t lanes) {
  // Element i of every vector is the run x[i * lanes, (i + 1) * lanes), so a
  // stage on pairs (i, i + h) is a butterfly on runs of h * lanes floats.
  std::int64_t h = 1;
  for (; 4 * h <= n; h *= 4) {
    const std::int64_t run = h * lanes;
    for (std::int64_t j = 0; j < n * lanes; j += 4 * run) {
      Butterflies2(x + j, x + j + run, x + j + 2 * run, x + j + 3 * run, run);
    }
  }
  if (h < n) Butterflies(x, x + h * lanes, h * lanes);  // log2(n) odd: h = n / 2
}

void Fastfood(const FastfoodParams& p, const FastfoodInput& x, const float* b, const float* g,
              const float* s, const std::int32_t* permutation, const float* bias,
              const FastfoodOutput& out, ParallelExecutor& executor) {
  const std::int64_t n = p.block_size, d = p.input_dim, units = p.units;
  const std::int64_t blocks = p.used_blocks();
  const float inv_n = 1.0f / static_cast<float>(n);  // exact: n is a power of two
  const bool relu = p.activation == Activation::kRelu;
  // An int8 output: QuantizeInt8 with its factor 1 / scale hoisted.
  const Int8Quantization& oq = out.quantization;
  const float out_inv_scale = oq.inverse_scale();
  // Rows go through the transforms kFastfoodLanes at a time, interleaved
  // (value i of row l at [i * lanes + l]): then every butterfly stage, the
  // short ones (h = 1, 2) included, and the gather work on contiguous runs of
  // at least `lanes` floats, which vectorise. Per value the operations are
  // those of one row alone, so the bits do not depend on the grouping. One
  // task per (group, block): a single row still spreads over its blocks.
  const std::int64_t groups = (p.rows + kFastfoodLanes - 1) / kFastfoodLanes;
  const std::int64_t max_lanes = std::min(kFastfoodLanes, p.rows);
  std::int64_t log2n = 0;
  while ((std::int64_t{1} << log2n) < n) ++log2n;
  executor.ParallelFor(groups * blocks, max_lanes * n * (2 * log2n + 4),
                       [&](std::int64_t begin, std::int64_t end) {
    std::vector<float> scratch(static_cast<std::size_t>(2 * n * max_lanes));
    float* t = scratch.data();
    float* u = t + n * max_lanes;
    for (std::int64_t task = begin; task < end; ++task) {
      const std::int64_t group = task / blocks, blk = task % blocks;
      const std::int64_t row0 = group * kFastfoodLanes;
      const std::int64_t lanes = std::min(kFastfoodLanes, p.rows - row0);
      const float* bb = b + blk * n;
      const float* gb = g + blk * n;
      const float* sb = s + blk * n;
      const std::int32_t* pb = permutation + blk * n;
      // The Keras layer pads with zeros and then multiplies: 0 * b as well.
      // An int8 row is dequantized first: the float row DEQUANTIZE would give.
      for (std::int64_t l = 0; l < lanes; ++l) {
        const std::int64_t offset = (row0 + l) * d;
        if (x.int8) {
          const std::int8_t* qr = static_cast<const std::int8_t*>(x.data) + offset;
          for (std::int64_t i = 0; i < d; ++i) {
            t[i * lanes + l] = DequantizeInt8(qr[i], x.quantization) * bb[i];
          }
        } else {
          const float* xr = static_cast<const float*>(x.data) + offset;
          for (std::int64_t i = 0; i < d; ++i) t[i * lanes + l] = xr[i] * bb[i];
        }
        for (std::int64_t i = d; i < n; ++i) t[i * lanes + l] = 0.0f * bb[i];
      }
      FastWalshHadamard(t, n, lanes);
      for (std::int64_t j = 0; j < n; ++j) {
        const float* from = t + pb[j] * lanes;
        for (std::int64_t l = 0; l < lanes; ++l) u[j * lanes + l] = from[l] * gb[j];
      }
      FastWalshHadamard(u, n, lanes);
      const std::int64_t first = blk * n;
      const std::int64_t width = std::min(n, units - first);
      for (std::int64_t l = 0; l < lanes; ++l) {
        const auto value = [&](std::int64_t j) {
          float y = u[j * lanes + l] * (sb[j] * inv_n);
          if (bias != nullptr) y = y + bias[first + j];
          if (relu && y < 0.0f) y = 0.0f;
          return y;
        };
        const std::int64_t offset = (row0 + l) * units + first;
        if (out.int8) {
          std::int8_t* o = static_cast<std::int8_t*>(out.data) + offset;
          for (std::int64_t j = 0; j < width; ++j) {
            o[j] = QuantizeInt8Scaled(value(j) * out_inv_scale, oq.zero_point, oq.lowest());
          }
        } else {
          float* o = static_cast<float*>(out.data) + offset;
          for (std::int64_t j = 0; j < width; ++j) o[j] = value(j);
        }
      }
    }
  });
}

}  // namespace lowbit
