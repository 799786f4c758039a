#include "custom_ops/core/cpu_features.h"

namespace lowbit {

CpuFeatures DetectCpuFeatures() {
  CpuFeatures f;
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  f.popcnt = __builtin_cpu_supports("popcnt");
  f.avx2 = __builtin_cpu_supports("avx2");
  f.avx512bw = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
  f.avx512_vpopcntdq = __builtin_cpu_supports("avx512vpopcntdq");
#elif defined(__aarch64__) || defined(__ARM_NEON)
  f.neon = true;
#endif
  return f;
}

}  // namespace lowbit
