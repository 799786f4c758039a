// Internal: the GEMV kernels behind BGemm (core/bgemm.cc) for the SIMD filter
// layouts, used when a call has fewer rows than the convolution's register
// tile (rows < P of bconv2d_simd.h, the tile_pixels of the path's row in the
// kernel table, core/kernel_table.cc). Written once in core/bgemv_simd.h and
// instantiated by the SIMD convolution's translation units with their ISA
// structs and flags.
#ifndef LOWBIT_CORE_BGEMV_KERNELS_H_
#define LOWBIT_CORE_BGEMV_KERNELS_H_

#include <cstdint>

#include "custom_ops/core/bconv2d_kernels.h"

namespace lowbit {

// What the GEMV kernels are given. As for SimdConvArgs the dispatch point
// (bgemm.cc) owns every buffer.
struct SimdGemvArgs {
  std::int64_t rows = 0;          // in [1, P) for the kernel's tile P
  std::int64_t channels_in = 0;   // K
  std::int64_t out_channels = 0;
  bool relu = false;
  // [rows, PackedWords(K)] words, the padding bits of the last word zero.
  const PackedWord* input = nullptr;
  // BConv2DFilter's interleaved layout of a 1x1 filter:
  // [block][word][lane], BlockWidth lanes, zero channels past out_channels.
  const PackedWord* filter = nullptr;
  const float* multiplier = nullptr;
  const float* bias = nullptr;
  float* output = nullptr;  // [rows, out_channels]
};

void BGemvAvx2(const SimdGemvArgs& args, ParallelExecutor& executor);
void BGemvAvx512Bw(const SimdGemvArgs& args, ParallelExecutor& executor);
void BGemvAvx512(const SimdGemvArgs& args, ParallelExecutor& executor);

}  // namespace lowbit

#endif  // LOWBIT_CORE_BGEMV_KERNELS_H_
