// Built with -mpopcnt on x86 (see custom_ops/CMakeLists.txt); only called when
// the CPU reports POPCNT.
#include "custom_ops/core/bconv2d_blocked.h"
#include "custom_ops/core/bconv2d_kernels.h"

namespace lowbit {

#if defined(__POPCNT__)
namespace {

struct HardwarePopcount {
  static std::int32_t Pop64(std::uint64_t v) { return __builtin_popcountll(v); }
  static std::int32_t Pop32(std::uint32_t v) { return __builtin_popcount(v); }
};

}  // namespace

void BConv2DX86Popcnt(const BConv2DParams& params, const PackedWord* input,
                      const PackedWord* filter, const float* multiplier, const float* bias,
                      const BConv2DEpilogue& epilogue, float* output,
                      ParallelExecutor& executor) {
  BConv2DBlocked<HardwarePopcount>(params, input, filter, multiplier, bias, epilogue, output,
                                   executor);
}
#else
void BConv2DX86Popcnt(const BConv2DParams& params, const PackedWord* input,
                      const PackedWord* filter, const float* multiplier, const float* bias,
                      const BConv2DEpilogue& epilogue, float* output,
                      ParallelExecutor& executor) {
  BConv2DPortable(params, input, filter, multiplier, bias, epilogue, output, executor);
}
#endif

}  // namespace lowbit
