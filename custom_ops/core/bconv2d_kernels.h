// Internal: the binary convolution kernels behind the BConv2D dispatch point.
// Each takes a params struct that passed ComputeBConv2DGeometry.
#ifndef LOWBIT_CORE_BCONV2D_KERNELS_H_
#define LOWBIT_CORE_BCONV2D_KERNELS_H_

#include "custom_ops/core/bconv2d.h"

namespace lowbit {

// Plain loop nest over every output value, tap and channel bit; single thread.
void BConv2DReference(const BConv2DParams& params, const PackedWord* input,
                      const PackedWord* filter, const float* multiplier, const float* bias,
                      float* output);

// Blocked popcount kernel in portable C++ (software popcount).
void BConv2DPortable(const BConv2DParams& params, const PackedWord* input,
                     const PackedWord* filter, const float* multiplier, const float* bias,
                     float* output, ParallelExecutor& executor);

// The same kernel compiled with the POPCNT instruction (x86 only; elsewhere it
// forwards to the portable kernel).
void BConv2DX86Popcnt(const BConv2DParams& params, const PackedWord* input,
                      const PackedWord* filter, const float* multiplier, const float* bias,
                      float* output, ParallelExecutor& executor);

}  // namespace lowbit

#endif  // LOWBIT_CORE_BCONV2D_KERNELS_H_
