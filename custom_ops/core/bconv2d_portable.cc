#include "custom_ops/core/bconv2d_blocked.h"
#include "custom_ops/core/bconv2d_kernels.h"

namespace lowbit {
namespace {

// Software popcount (SWAR): sums bits in 2-, 4-, then 8-bit fields and adds the
// bytes with one multiply. No instruction beyond plain integer arithmetic.
struct SoftwarePopcount {
  static std::int32_t Pop64(std::uint64_t v) {
    v = v - ((v >> 1) & 0x5555555555555555ull);
    v = (v & 0x3333333333333333ull) + ((v >> 2) & 0x3333333333333333ull);
    v = (v + (v >> 4)) & 0x0f0f0f0f0f0f0f0full;
    return static_cast<std::int32_t>((v * 0x0101010101010101ull) >> 56);
  }
  static std::int32_t Pop32(std::uint32_t v) {
    v = v - ((v >> 1) & 0x55555555u);
    v = (v & 0x33333333u) + ((v >> 2) & 0x33333333u);
    v = (v + (v >> 4)) & 0x0f0f0f0fu;
    return static_cast<std::int32_t>((v * 0x01010101u) >> 24);
  }
};

}  // namespace

void BConv2DPortable(const BConv2DParams& params, const PackedWord* input,
                     const PackedWord* filter, const float* multiplier, const float* bias,
                     const BConv2DEpilogue& epilogue, float* output,
                     ParallelExecutor& executor) {
  BConv2DBlocked<SoftwarePopcount>(params, input, filter, multiplier, bias, epilogue, output,
                                   executor);
}

}  // namespace lowbit
