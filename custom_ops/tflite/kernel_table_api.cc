// The kernel table (core/kernel_table.h) for Python, through ctypes:
//   ctypes.CDLL(lowbit_tf._native.tflite_library_path()).lowbit_kernel_table
// returns KernelTableText(), one row per line, best first; read by
// lowbit_tf._native.kernel_paths() (the tests iterate it instead of naming
// kernels). Works without TensorFlow, like the rest of this library.
#include <string>

#include "custom_ops/core/kernel_table.h"

extern "C" __attribute__((visibility("default"))) const char* lowbit_kernel_table() {
  static const std::string text = lowbit::KernelTableText();
  return text.c_str();
}
