// Bit-packing of float tensors along their innermost (channel) axis.
#ifndef LOWBIT_CORE_BITPACK_H_
#define LOWBIT_CORE_BITPACK_H_

#include <cstdint>

#include "custom_ops/core/kernel_table.h"
#include "custom_ops/core/types.h"

namespace lowbit {

// Packs `rows` rows of `channels` floats each into rows of PackedWords(channels)
// words: bit c of a row is 1 exactly when value c is a negative normal number
// or -inf (value -1). Zeros, subnormals (flushed to zero, as TensorFlow's
// kernels do in the Keras training path) and NaN give 0 (value +1), whatever
// the thread's floating-point mode. Bits past `channels` in the last word are 0.
//
// The packer is that of a kernel path (the kernel table's bitpack_words).
// Ops choose the path once, when they are made, and pass it here, so that
// no call pays for the choice (SelectBConv2DKernel reads the CPU features and
// LOWBIT_KERNEL); the overload without one chooses on every call.
void BitpackRows(BConv2DKernel kernel, const float* input, std::int64_t rows,
                 std::int64_t channels, PackedWord* output, ParallelExecutor& executor);
void BitpackRows(const float* input, std::int64_t rows, std::int64_t channels,
                 PackedWord* output, ParallelExecutor& executor);

// Packs the COLUMNS of a row-major [rows, cols] float matrix: output row c,
// PackedWords(rows) words, holds the signs of column c (bit r % 32 of word
// r / 32 is value (r, c)), with the same sign test and zero padding bits as
// BitpackRows. A Keras kernel is such a matrix with one column per output
// channel: [K, N_out] for a dense layer, HWIO [KH, KW, C, C_out] read as
// [KH * KW * C, C_out] for a conv, whose rows are then in (ky, kx, c) order;
// the result is the compact packed filter of LowbitBgemm / LowbitBconv2d
// (the packing of the transposed kernel) without a transposed copy.
void BitpackColumns(const float* input, std::int64_t rows, std::int64_t cols,
                    PackedWord* output, ParallelExecutor& executor);

}  // namespace lowbit

#endif  // LOWBIT_CORE_BITPACK_H_
