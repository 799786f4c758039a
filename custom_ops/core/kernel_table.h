// The kernel table: every kernel path of the binary ops, one row each, in one
// place (core/kernel_table.cc). Selection (SelectBConv2DKernel), the names
// (LOWBIT_KERNEL, BConv2DKernelName, what the libraries report), the
// dispatch of every op with per-ISA code (BConv2D, BGemm's GEMV path,
// BitpackRows, BDepthwiseConv2D), the filter layout (block width) and the
// checkers' and tests' loops over kernels all read it.
//
// A row is one path, chosen once for all these ops (one LOWBIT_KERNEL): its
// id, name, the CPU features it needs, the tile sizes of its filter layout,
// and one entry point per op. An op entry left nullptr means "this op has no
// code of its own for the path": the op runs its portable code (BGemm: the
// convolution). Each row's entry points live in per-ISA translation units
// (core/<op>_<isa>.cc) built with that ISA's compiler flags and entered only
// after the run-time CPU check here; a row whose convolution entry is nullptr
// is not built into this library (another architecture).
//
// Order = preference. Automatic choice takes the first row this CPU can run;
// LOWBIT_KERNEL=<name> starts the search at that row instead, so a forced path
// the CPU lacks falls back to the next one down that it can run ("avx512"
// -> "avx512bw" -> "avx2" -> "x86_popcnt" -> ... -> "portable"), rather than
// dying of an illegal instruction; an unknown name means automatic choice.
// "portable" runs on any CPU, so automatic choice never goes past it to
// "reference" (the plain loop nest, ground truth for the tests).
//
// Adding an instruction set:
//   1. its kernels in new files, e.g. core/bconv2d_<isa>.cc instantiating
//      core/bconv2d_simd.h and core/bgemv_simd.h with an ISA struct (see
//      core/bconv2d_avx2.cc), or, for a kernel that vectorises the input
//      channels on the channel-major filter, core/bconv2d_channel_major.h
//      (see core/bconv2d_neon.cc); plus core/bitpack_<isa>.cc if it packs
//      faster;
//      their declarations in core/bconv2d_kernels.h (and bgemv_kernels.h,
//      bitpack_kernels.h) and its block width / tile constants there;
//   2. the files' compiler flags in custom_ops/CMakeLists.txt;
//   3. an id in BConv2DKernel below, a CpuFeature bit (core/cpu_features.*)
//      if it needs a feature not yet detected, and its row in kernel_table.cc,
//      placed by preference.
// The checkers (custom_ops/tests) and the Python tests (through
// lowbit_kernel_table() of the TFLite library: lowbit_tf._native.kernel_paths())
// iterate the table, so the new path is tested without naming it anywhere else.
#ifndef LOWBIT_CORE_KERNEL_TABLE_H_
#define LOWBIT_CORE_KERNEL_TABLE_H_

#include <cstdint>
#include <string>

#include "custom_ops/core/types.h"

namespace lowbit {

struct BConv2DParams;
struct BConv2DEpilogue;
struct SimdConvArgs;
struct SimdGemvArgs;
struct DepthwiseRowsArgs;

// Row ids (their order means nothing; the table's order is the ranking).
enum class BConv2DKernel { kReference, kPortable, kX86Popcnt, kAvx2, kAvx512Bw, kAvx512, kNeon };

// Binary convolution on the per-tap filter layout (core/bconv2d.h).
using PerTapConvFn = void (*)(const BConv2DParams& params, const PackedWord* input,
                              const PackedWord* filter, const float* multiplier,
                              const float* bias, const BConv2DEpilogue& epilogue, float* output,
                              ParallelExecutor& executor);
// Binary convolution on the channel-interleaved layout (core/bconv2d_simd.h).
using SimdConvFn = void (*)(const SimdConvArgs& args, ParallelExecutor& executor);
// BGemm below the convolution's register tile (core/bgemv_simd.h).
using SimdGemvFn = void (*)(const SimdGemvArgs& args, ParallelExecutor& executor);
// Whole words of BitpackRows: `words` * 32 floats into `words` words.
using BitpackWordsFn = void (*)(const float* input, std::int64_t words, PackedWord* output);
// The rows of a binary depthwise convolution (core/bdepthwise_rows.h).
using DepthwiseRowsFn = void (*)(const DepthwiseRowsArgs& args, ParallelExecutor& executor);

struct KernelPath {
  BConv2DKernel id;
  const char* name;       // the LOWBIT_KERNEL value and the reported name
  unsigned cpu_features;  // CpuFeature bits the CPU must all have
  // Binary convolution and BGemm: one of the two entries is set where built.
  PerTapConvFn conv_per_tap;
  SimdConvFn conv_simd;
  int block_width;  // output channels per block of conv_simd's filter (0: per-tap)
  // conv_simd's filter layout within a block: false = interleaved by word
  // ([tap][word][lane], the x86 kernels), true = channel-major ([lane][tap][word],
  // NEON). See BConv2DFilter.
  bool channel_major;
  int tile_pixels;  // pixels of conv_simd's register tile; bgemv serves fewer rows
  SimdGemvFn bgemv;                 // nullptr: BGemm always runs the convolution
  BitpackWordsFn bitpack_words;     // nullptr: the scalar packer
  DepthwiseRowsFn bdepthwise_rows;  // nullptr: BDepthwiseRowsPortable

  bool built() const { return conv_per_tap != nullptr || conv_simd != nullptr; }
};

// The rows, best first (range-for over KernelPaths()).
struct KernelPathList {
  const KernelPath* first;
  int size;
  const KernelPath* begin() const { return first; }
  const KernelPath* end() const { return first + size; }
};
KernelPathList KernelPaths();

// The row of `id` (every id has one).
const KernelPath& GetKernelPath(BConv2DKernel id);
// The row called `name`; nullptr for an unknown name.
const KernelPath* FindKernelPath(const char* name);
// Built into this library and every feature it needs present on this CPU.
bool CanRun(const KernelPath& path);

// The path for this CPU and LOWBIT_KERNEL (see above), read on every call.
BConv2DKernel SelectBConv2DKernel();
const char* BConv2DKernelName(BConv2DKernel kernel);

// The table as text, one row per line, best first:
//   <name> features=<f1,f2|-> built=<0|1> runnable=<0|1> block_width=<n>
//   tile_pixels=<n> bgemv=<row> bitpack=<row> bdepthwise=<row>
// where an op column names the last row (least demanding) that shares this
// row's entry point for that op, or "-" when the row has none (portable
// code). Served to Python by lowbit_kernel_table() in the TFLite library.
std::string KernelTableText();

}  // namespace lowbit

#endif  // LOWBIT_CORE_KERNEL_TABLE_H_
