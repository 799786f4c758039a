// Run-time CPU feature detection, the one place where kernels are chosen from
// (through the kernel table, core/kernel_table.h).
#ifndef LOWBIT_CORE_CPU_FEATURES_H_
#define LOWBIT_CORE_CPU_FEATURES_H_

namespace lowbit {

// One bit per feature a kernel path may need (KernelPath::cpu_features).
enum CpuFeature : unsigned {
  kCpuPopcnt = 1u << 0,           // x86 POPCNT
  kCpuAvx2 = 1u << 1,             // x86 AVX2
  kCpuAvx512Bw = 1u << 2,         // x86 AVX-512 F + BW
  kCpuAvx512Vpopcntdq = 1u << 3,  // x86 AVX-512 VPOPCNTDQ
  kCpuNeon = 1u << 4,             // Arm Advanced SIMD
  // x86 AVX-512 VL + VNNI (vpdpbusd; the int8 conv, core/int8_conv2d.h)
  kCpuAvx512Vnni = 1u << 5,
};

struct CpuFeatures {
  unsigned bits = 0;  // CpuFeature bits this CPU has
  // True when the CPU has every feature in `needed`.
  bool Has(unsigned needed) const { return (bits & needed) == needed; }
};

CpuFeatures DetectCpuFeatures();

// The name of one CpuFeature bit ("popcnt", "avx2", ...), for reports; "?"
// for anything else.
const char* CpuFeatureName(unsigned feature);

}  // namespace lowbit

#endif  // LOWBIT_CORE_CPU_FEATURES_H_
