// Runs one core kernel a given number of times, for instruction counting
// (benchmarks/arm_instruction_counts.py runs it under qemu with
// tests/arm/insn_count_plugin.c and subtracts the counts of 1 and 2 runs, so
// one-time setup cancels out).
//
//   kernel_driver bconv2d|bitpack REPS H W C_IN C_OUT K
//
// The kernel is the one SelectBConv2DKernel() picks: LOWBIT_KERNEL forces one.
// Inputs are deterministic; the checksum it prints lets runs be compared.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "custom_ops/core/bconv2d.h"
#include "custom_ops/core/bitpack.h"
#include "custom_ops/core/types.h"

namespace {

std::uint32_t Next(std::uint64_t* state) {  // 64-bit LCG, upper half
  *state = *state * 6364136223846793005ULL + 1442695040888963407ULL;
  return static_cast<std::uint32_t>(*state >> 32);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 8) {
    std::fprintf(stderr, "usage: %s bconv2d|bitpack REPS H W C_IN C_OUT K\n", argv[0]);
    return 2;
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
    std::printf("kernel=bitpack checksum=%016llx\n", static_cast<unsigned long long>(sum));
    return 0;
  }

  lowbit::BitpackRows(input.data(), rows, p.channels_in, packed.data(), executor);
  std::vector<lowbit::PackedWord> compact(static_cast<std::size_t>(
      p.out_channels * lowbit::CompactFilterWords(p.kernel_h, p.kernel_w, p.channels_in)));
  for (auto& w : compact) w = Next(&state);
  std::vector<float> multiplier(static_cast<std::size_t>(p.out_channels));
  std::vector<float> bias(static_cast<std::size_t>(p.out_channels));
  for (std::size_t i = 0; i < multiplier.size(); ++i) {
    multiplier[i] = 0.5f + 0.01f * static_cast<float>(i);
    bias[i] = -0.25f * static_cast<float>(i % 7);
  }
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
  double sum = 0;
  for (float v : output) sum += v;
  std::printf("kernel=%s checksum=%.6e\n", lowbit::BConv2DKernelName(kernel), sum);
  return 0;
}
