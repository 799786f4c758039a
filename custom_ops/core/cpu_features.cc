#include "custom_ops/core/cpu_features.h"

namespace lowbit {

CpuFeatures DetectCpuFeatures() {
  CpuFeatures f;
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  if (__builtin_cpu_supports("popcnt")) f.bits |= kCpuPopcnt;
  if (__builtin_cpu_supports("avx2")) f.bits |= kCpuAvx2;
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")) {
    f.bits |= kCpuAvx512Bw;
  }
  if (__builtin_cpu_supports("avx512vpopcntdq")) f.bits |= kCpuAvx512Vpopcntdq;
  if (__builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni")) {
    f.bits |= kCpuAvx512Vnni;
  }
#elif defined(__aarch64__) || defined(__ARM_NEON)
  f.bits |= kCpuNeon;
#endif
  return f;
}

const char* CpuFeatureName(unsigned feature) {
  switch (feature) {
    case kCpuPopcnt:
      return "popcnt";
    case kCpuAvx2:
      return "avx2";
    case kCpuAvx512Bw:
      return "avx512bw";
    case kCpuAvx512Vpopcntdq:
      return "avx512_vpopcntdq";
    case kCpuNeon:
      return "neon";
    case kCpuAvx512Vnni:
      return "avx512_vnni";
    default:
      return "?";
  }
}

}  // namespace lowbit
