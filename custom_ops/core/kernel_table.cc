#include "custom_ops/core/kernel_table.h"

#include <cstdlib>
#include <cstring>

#include "custom_ops/core/bconv2d_kernels.h"
#include "custom_ops/core/bdepthwise_kernels.h"
#include "custom_ops/core/bgemv_kernels.h"
#include "custom_ops/core/bitpack_kernels.h"
#include "custom_ops/core/cpu_features.h"

namespace lowbit {
namespace {

// An entry point where its instruction set is compiled in, else nullptr.
#if LOWBIT_X86_SIMD
#define LOWBIT_X86_ENTRY(fn) &fn
#else
#define LOWBIT_X86_ENTRY(fn) nullptr
#endif
#if LOWBIT_NEON_SIMD
#define LOWBIT_NEON_ENTRY(fn) &fn
#else
#define LOWBIT_NEON_ENTRY(fn) nullptr
#endif

// The reference kernel is single-threaded; this gives it the common signature.
void ReferenceConv(const BConv2DParams& params, const PackedWord* input, const PackedWord* filter,
                   const float* multiplier, const float* bias, const BConv2DEpilogue& epilogue,
                   float* output, ParallelExecutor&) {
  BConv2DReference(params, input, filter, multiplier, bias, epilogue, output);
}

// Best first (kernel_table.h). "reference" is the plain loop nest used as
// ground truth by the tests; "portable" the blocked kernel in plain C++ (any
// CPU); "x86_popcnt" the same kernel built with the POPCNT instruction. The
// SIMD kernels (core/bconv2d_simd.h) tile output pixels x output channels in
// vector registers, with the channels interleaved in the filter so that one
// vector load serves many output channels:
//   avx2       8 channels per ymm, nibble-LUT (vpshufb) popcount;
//   avx512bw   16 channels per zmm, nibble-LUT popcount (AVX-512 F + BW, for
//              CPUs without VPOPCNTDQ);
//   avx512     16 channels per zmm, VPOPCNTD (AVX-512 F + VPOPCNTDQ);
//   neon       (aarch64, armv7 with NEON) vectorises the input channels
//              instead, 128 bits per q register, on a channel-major filter:
//              EOR, CNT, pairwise accumulate (core/bconv2d_neon.cc). Its
//              small-batch BGemm runs the same micro-kernel (no GEMV entry).
// The depthwise rows have an AVX-512 F + BW kernel (both AVX-512 paths;
// core/bdepthwise_avx512.cc), an AVX2 one and a NEON one
// (core/bdepthwise_neon.cc); the packer has an AVX-512 F one
// shared by both AVX-512 paths.
constexpr KernelPath kPaths[] = {
    {BConv2DKernel::kAvx512, "avx512", kCpuAvx512Bw | kCpuAvx512Vpopcntdq, nullptr,
     LOWBIT_X86_ENTRY(BConv2DAvx512), kAvx512BlockWidth, false, kAvx512TilePixels,
     LOWBIT_X86_ENTRY(BGemvAvx512), LOWBIT_X86_ENTRY(BitpackWordsAvx512),
     LOWBIT_X86_ENTRY(BDepthwiseRowsAvx512)},
    {BConv2DKernel::kAvx512Bw, "avx512bw", kCpuAvx512Bw, nullptr,
     LOWBIT_X86_ENTRY(BConv2DAvx512Bw), kAvx512BlockWidth, false, kAvx512BwTilePixels,
     LOWBIT_X86_ENTRY(BGemvAvx512Bw), LOWBIT_X86_ENTRY(BitpackWordsAvx512),
     LOWBIT_X86_ENTRY(BDepthwiseRowsAvx512)},
    {BConv2DKernel::kAvx2, "avx2", kCpuAvx2, nullptr, LOWBIT_X86_ENTRY(BConv2DAvx2),
     kAvx2BlockWidth, false, kAvx2TilePixels, LOWBIT_X86_ENTRY(BGemvAvx2),
     LOWBIT_X86_ENTRY(BitpackWordsAvx2), LOWBIT_X86_ENTRY(BDepthwiseRowsAvx2)},
    {BConv2DKernel::kX86Popcnt, "x86_popcnt", kCpuPopcnt, LOWBIT_X86_ENTRY(BConv2DX86Popcnt),
     nullptr, 0, false, 0, nullptr, nullptr, nullptr},
    {BConv2DKernel::kNeon, "neon", kCpuNeon, nullptr, LOWBIT_NEON_ENTRY(BConv2DNeon),
     kNeonBlockWidth, true, kNeonTilePixels, nullptr, LOWBIT_NEON_ENTRY(BitpackWordsNeon),
     LOWBIT_NEON_ENTRY(BDepthwiseRowsNeon)},
    {BConv2DKernel::kPortable, "portable", 0, &BConv2DPortable, nullptr, 0, false, 0, nullptr,
     nullptr, nullptr},
    {BConv2DKernel::kReference, "reference", 0, &ReferenceConv, nullptr, 0, false, 0, nullptr,
     nullptr, nullptr},
};
constexpr int kPathCount = static_cast<int>(sizeof(kPaths) / sizeof(kPaths[0]));

bool CanRunOn(const KernelPath& path, const CpuFeatures& cpu) {
  return path.built() && cpu.Has(path.cpu_features);
}

// Name of the last row whose `entry` equals this row's, "-" when it has none.
template <typename Entry>
const char* EntryOwner(const KernelPath& row, Entry KernelPath::*entry) {
  if (row.*entry == nullptr) return "-";
  const char* owner = row.name;
  for (const KernelPath& other : KernelPaths()) {
    if (other.*entry == row.*entry) owner = other.name;
  }
  return owner;
}

}  // namespace

KernelPathList KernelPaths() { return {kPaths, kPathCount}; }

const KernelPath& GetKernelPath(BConv2DKernel id) {
  for (const KernelPath& path : KernelPaths()) {
    if (path.id == id) return path;
  }
  return kPaths[kPathCount - 1];  // unreachable: every id has a row
}

const KernelPath* FindKernelPath(const char* name) {
  for (const KernelPath& path : KernelPaths()) {
    if (std::strcmp(path.name, name) == 0) return &path;
  }
  return nullptr;
}

bool CanRun(const KernelPath& path) { return CanRunOn(path, DetectCpuFeatures()); }

BConv2DKernel SelectBConv2DKernel() {
  const CpuFeatures cpu = DetectCpuFeatures();
  const char* forced = std::getenv("LOWBIT_KERNEL");
  const KernelPath* start = forced != nullptr ? FindKernelPath(forced) : nullptr;
  const KernelPathList paths = KernelPaths();
  for (const KernelPath* path = start != nullptr ? start : paths.begin(); path != paths.end();
       ++path) {
    if (CanRunOn(*path, cpu)) return path->id;
  }
  return BConv2DKernel::kPortable;  // unreachable: "portable" runs anywhere
}

const char* BConv2DKernelName(BConv2DKernel kernel) { return GetKernelPath(kernel).name; }

std::string KernelTableText() {
  std::string text;
  for (const KernelPath& path : KernelPaths()) {
    std::string features;
    for (unsigned bit = 1; bit != 0 && bit <= path.cpu_features; bit <<= 1) {
      if ((path.cpu_features & bit) == 0) continue;
      if (!features.empty()) features += ",";
      features += CpuFeatureName(bit);
    }
    text += std::string(path.name) + " features=" + (features.empty() ? "-" : features) +
            " built=" + (path.built() ? "1" : "0") + " runnable=" + (CanRun(path) ? "1" : "0") +
            " block_width=" + std::to_string(path.block_width) +
            " tile_pixels=" + std::to_string(path.tile_pixels) +
            " bgemv=" + EntryOwner(path, &KernelPath::bgemv) +
            " bitpack=" + EntryOwner(path, &KernelPath::bitpack_words) +
            " bdepthwise=" + EntryOwner(path, &KernelPath::bdepthwise_rows) + "\n";
  }
  return text;
}

}  // namespace lowbit
