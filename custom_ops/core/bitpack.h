// Bit-packing of float tensors along their innermost (channel) axis.
#ifndef LOWBIT_CORE_BITPACK_H_
#define LOWBIT_CORE_BITPACK_H_

#include <cstdint>

#include "custom_ops/core/types.h"

namespace lowbit {

// Packs `rows` rows of `channels` floats each into rows of PackedWords(channels)
// words: bit c of a row is 1 exactly when value c is a negative normal number
// or -inf (value -1). Zeros, subnormals (flushed to zero, as TensorFlow's
// kernels do in the Keras training path) and NaN give 0 (value +1), whatever
// the thread's floating-point mode. Bits past `channels` in the last word are 0.
void BitpackRows(const float* input, std::int64_t rows, std::int64_t channels,
                 PackedWord* output, ParallelExecutor& executor);

}  // namespace lowbit

#endif  // LOWBIT_CORE_BITPACK_H_
