// Run-time CPU feature detection, the one place where kernels are chosen from.
#ifndef LOWBIT_CORE_CPU_FEATURES_H_
#define LOWBIT_CORE_CPU_FEATURES_H_

namespace lowbit {

struct CpuFeatures {
  bool popcnt = false;            // x86 POPCNT
  bool avx2 = false;              // x86 AVX2
  bool avx512bw = false;          // x86 AVX-512 F + BW
  bool avx512_vpopcntdq = false;  // x86 AVX-512 VPOPCNTDQ
  bool neon = false;              // Arm Advanced SIMD
};

CpuFeatures DetectCpuFeatures();

}  // namespace lowbit

#endif  // LOWBIT_CORE_CPU_FEATURES_H_
