// Runs one core kernel a given number of times, for instruction counting
// (benchmarks/arm_instruction_counts.py runs it under qemu with
// tests/arm/insn_count_plugin.c and subtracts the counts of 1 and 2 runs, so
// one-time setup cancels out).
//
//   kernel_driver bconv2d|bitpack REPS H W C_IN C_OUT K   ('same' padding, stride 1)
//   kernel_driver bgemm REPS ROWS K N                     (binary dense, lowbit::BGemm)
//   kernel_driver bdepthwise REPS H W C K                 ('same' padding, stride 1, DM 1)
//
// The kernel path is the one SelectBConv2DKernel() picks: LOWBIT_KERNEL forces
// one. It prints "kernel=<path> code=<what ran>": code names the kernel table
// row whose entry point the op actually calls (conv: the path; bgemm below the
// path's register tile: its GEMV entry, "<row>-gemv"; depthwise: the owner of
// the path's bdepthwise_rows entry, "portable" when it has none). Filters are
// prepared once, outside the counted calls, as the TFLite kernels do in
// Prepare. Inputs are deterministic; the checksum lets runs be compared.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "custom_ops/core/bconv2d.h"
#include "custom_ops/core/bdepthwise.h"
#include "custom_ops/core/bgemm.h"
#include "custom_ops/core/bitpack.h"
#include "custom_ops/core/kernel_table.h"
#include "custom_ops/core/types.h"

namespace {

std::uint32_t Next(std::uint64_t* state) {  // 64-bit LCG, upper half
  *state = *state * 6364136223846793005ULL + 1442695040888963407ULL;
  return static_cast<std::uint32_t>(*state >> 32);
}

// The last (least demanding) row of the kernel table sharing `row`'s entry, as
// KernelTableText() names it; nullptr when the row has none.
template <typename Entry>
const char* EntryOwner(const lowbit::KernelPath& row, Entry lowbit::KernelPath::*entry) {
  if (row.*entry == nullptr) return nullptr;
  const char* owner = row.name;
  for (const lowbit::KernelPath& other : lowbit::KernelPaths()) {
    if (other.*entry == row.*entry) owner = other.name;
  }
  return owner;
}

void FillMultiplierBias(std::vector<float>* multiplier, std::vector<float>* bias,
                        std::int64_t channels) {
  multiplier->resize(static_cast<std::size_t>(channels));
  bias->resize(static_cast<std::size_t>(channels));
  for (std::size_t i = 0; i < multiplier->size(); ++i) {
    (*multiplier)[i] = 0.5f + 0.01f * static_cast<float>(i);
    (*bias)[i] = -0.25f * static_cast<float>(i % 7);
  }
}

double Sum(const std::vector<float>& output) {
  double sum = 0;
  for (float v : output) sum += v;
  return sum;
}

int Usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s bconv2d|bitpack REPS H W C_IN C_OUT K\n"
               "       %s bgemm REPS ROWS K N\n"
               "       %s bdepthwise REPS H W C K\n",
               argv0, argv0, argv0);
  return 2;
}

int RunBGemm(int reps, char** argv) {
  lowbit::BGemmParams p;
  p.rows = std::atoll(argv[0]);
  p.channels_in = std::atoll(argv[1]);
  p.out_channels = std::atoll(argv[2]);
  const lowbit::Status status = lowbit::CheckBGemmShape(p);
  if (!status.ok) {
    std::fprintf(stderr, "bad shape: %s\n", status.message.c_str());
    return 2;
  }
  std::uint64_t state = 12345;
  std::vector<lowbit::PackedWord> input(static_cast<std::size_t>(p.rows * p.words()));
  for (auto& w : input) w = Next(&state);
  std::vector<lowbit::PackedWord> compact(static_cast<std::size_t>(p.out_channels * p.words()));
  for (auto& w : compact) w = Next(&state);
  std::vector<float> multiplier, bias;
  FillMultiplierBias(&multiplier, &bias, p.out_channels);
  const lowbit::BConv2DKernel kernel = lowbit::SelectBConv2DKernel();
  const lowbit::KernelPath& path = lowbit::GetKernelPath(kernel);
  lowbit::BConv2DFilter filter;
  filter.Prepare(kernel, p.AsConv2D(), compact.data());
  std::vector<float> output(static_cast<std::size_t>(p.rows * p.out_channels));
  lowbit::InlineExecutor executor;
  for (int r = 0; r < reps; ++r) {
    lowbit::BGemm(p, input.data(), filter, multiplier.data(), bias.data(), output.data(),
                  executor);
  }
  // bgemm.cc: the GEMV entry serves 1 <= rows < tile_pixels when the path has one.
  const char* gemv = EntryOwner(path, &lowbit::KernelPath::bgemv);
  const std::string code = gemv != nullptr && p.rows >= 1 && p.rows < path.tile_pixels
                               ? std::string(gemv) + "-gemv"
                               : std::string(path.name);
  std::printf("kernel=%s code=%s checksum=%.6e\n", path.name, code.c_str(), Sum(output));
  return 0;
}

int RunBDepthwise(int reps, char** argv) {
  lowbit::BDepthwiseConv2DParams p;
  p.batch = 1;
  p.in_h = std::atoll(argv[0]);
  p.in_w = std::atoll(argv[1]);
  p.channels_in = std::atoll(argv[2]);
  p.kernel_h = p.kernel_w = std::atoll(argv[3]);
  p.padding = lowbit::Padding::kSame;
  p.pad_value = 1;
  const lowbit::Status status = lowbit::ComputeBDepthwiseConv2DGeometry(&p);
  if (!status.ok) {
    std::fprintf(stderr, "bad shape: %s\n", status.message.c_str());
    return 2;
  }
  std::uint64_t state = 12345;
  std::vector<lowbit::PackedWord> input(static_cast<std::size_t>(p.in_h * p.in_w * p.in_words()));
  for (auto& w : input) w = Next(&state);
  std::vector<lowbit::PackedWord> filter(
      static_cast<std::size_t>(lowbit::DepthwiseFilterWords(p)));
  for (auto& w : filter) w = Next(&state);
  std::vector<float> multiplier, bias;
  FillMultiplierBias(&multiplier, &bias, p.out_channels());
  std::vector<float> output(static_cast<std::size_t>(p.out_h * p.out_w * p.out_channels()));
  lowbit::InlineExecutor executor;
  for (int r = 0; r < reps; ++r) {
    lowbit::BDepthwiseConv2D(p, input.data(), filter.data(), multiplier.data(), bias.data(),
                             output.data(), executor);
  }
  const lowbit::KernelPath& path = lowbit::GetKernelPath(lowbit::SelectBConv2DKernel());
  const char* rows = EntryOwner(path, &lowbit::KernelPath::bdepthwise_rows);
  std::printf("kernel=%s code=%s checksum=%.6e\n", path.name,
              rows != nullptr ? rows : "portable", Sum(output));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return Usage(argv[0]);
  if (std::strcmp(argv[1], "bgemm") == 0) {
    if (argc != 6) return Usage(argv[0]);
    return RunBGemm(std::atoi(argv[2]), argv + 3);
  }
  if (std::strcmp(argv[1], "bdepthwise") == 0) {
    if (argc != 7) return Usage(argv[0]);
    return RunBDepthwise(std::atoi(argv[2]), argv + 3);
  }
  if (argc != 8 || (std::strcmp(argv[1], "bconv2d") != 0 && std::strcmp(argv[1], "bitpack") != 0)) {
    return Usage(argv[0]);
  }
  const bool bitpack_only = std::strcmp(argv[1], "bitpack") == 0;
  const int reps = std::atoi(argv[2]);
  lowbit::BConv2DParams p;
  p.batch = 1;
  p.in_h = std::atoll(argv[3]);
  p.in_w = std::atoll(argv[4]);
  p.channels_in = std::atoll(argv[5]);
  p.out_channels = std::atoll(argv[6]);
  p.kernel_h = p.kernel_w = std::atoll(argv[7]);
  p.padding = lowbit::Padding::kSame;
  p.pad_value = 1;
  lowbit::Status status = lowbit::CheckBConv2DOptions(p);
  if (status.ok) status = lowbit::ComputeBConv2DGeometry(&p);
  if (!status.ok) {
    std::fprintf(stderr, "bad shape: %s\n", status.message.c_str());
    return 2;
  }
  std::uint64_t state = 12345;
  std::vector<float> input(static_cast<std::size_t>(p.in_h * p.in_w * p.channels_in));
  for (float& v : input) v = static_cast<float>(static_cast<std::int32_t>(Next(&state))) * 1e-9f;
  std::vector<lowbit::PackedWord> packed(static_cast<std::size_t>(p.in_h * p.in_w * p.words()));
  lowbit::InlineExecutor executor;
  const std::int64_t rows = p.in_h * p.in_w;

  if (bitpack_only) {
    for (int r = 0; r < reps; ++r) {
      lowbit::BitpackRows(input.data(), rows, p.channels_in, packed.data(), executor);
    }
    std::uint64_t sum = 0;
    for (auto w : packed) sum = sum * 31 + w;
    std::printf("kernel=bitpack code=bitpack checksum=%016llx\n",
                static_cast<unsigned long long>(sum));
    return 0;
  }

  lowbit::BitpackRows(input.data(), rows, p.channels_in, packed.data(), executor);
  std::vector<lowbit::PackedWord> compact(static_cast<std::size_t>(
      p.out_channels * lowbit::CompactFilterWords(p.kernel_h, p.kernel_w, p.channels_in)));
  for (auto& w : compact) w = Next(&state);
  std::vector<float> multiplier, bias;
  FillMultiplierBias(&multiplier, &bias, p.out_channels);
  std::vector<lowbit::PackedWord> per_tap(
      static_cast<std::size_t>(p.out_channels * p.kernel_h * p.kernel_w * p.words()));
  lowbit::UnpackCompactFilter(p, compact.data(), per_tap.data());
  const lowbit::BConv2DKernel kernel = lowbit::SelectBConv2DKernel();
  std::vector<float> output(static_cast<std::size_t>(p.out_h * p.out_w * p.out_channels));
  // The filter is prepared once, as the TFLite kernel does in Prepare: the
  // calls counted are the convolution alone.
  lowbit::BConv2DFilter filter;
  filter.PrepareFromPerTap(kernel, p, per_tap.data());
  for (int r = 0; r < reps; ++r) {
    lowbit::BConv2D(p, packed.data(), filter, multiplier.data(), bias.data(), output.data(),
                    executor);
  }
  const char* name = lowbit::BConv2DKernelName(kernel);
  std::printf("kernel=%s code=%s checksum=%.6e\n", name, name, Sum(output));
  return 0;
}
