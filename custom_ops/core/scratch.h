// Per-thread scratch memory of the kernels: the channel-major NEON conv's
// two-pass paths (its int8 residual and bit-packed output, core/bconv2d.cc,
// core/bconv2d_bitpacked.cc: a layer's intermediate floats, often hundreds of
// KB) and the AVX-512 depthwise kernel's row copies (core/bdepthwise_avx512.cc).
// A fresh allocation per call would map, zero-fill and unmap that many pages
// on every call of a layer; this memory is kept by the calling thread and only
// grows, to the largest call it made in that slot. It is freed when the
// thread exits.
#ifndef LOWBIT_CORE_SCRATCH_H_
#define LOWBIT_CORE_SCRATCH_H_

#include <cstdint>

namespace lowbit {

// The users of the scratch memory; one block each per thread, so that one
// user's block stays valid while it calls into another.
// kInt8ConvImage and kInt8ConvPatches: the int8 conv's padded input (the
// calling thread) and its patches (each worker), core/int8_conv2d_avx512vnni.cc.
enum class ScratchSlot : int {
  kResidual = 0,
  kDotProducts,
  kDepthwiseRows,
  kInt8ConvImage,
  kInt8ConvPatches,
  kCount
};

// `bytes` bytes owned by the calling thread for `slot`, 64-byte aligned,
// valid until this thread's next ScratchBytes call for the same slot. They hold
// what the thread's last use left there; zero where that slot's block was
// (re)allocated, so that no byte is ever read that nothing wrote. Other
// threads may read and write them meanwhile (a ParallelFor's workers). Throws
// std::bad_alloc like new.
void* ScratchBytes(ScratchSlot slot, std::int64_t bytes);

// ScratchBytes as `count` floats.
inline float* ScratchFloats(ScratchSlot slot, std::int64_t count) {
  return static_cast<float*>(ScratchBytes(slot, count * static_cast<std::int64_t>(sizeof(float))));
}

}  // namespace lowbit

#endif  // LOWBIT_CORE_SCRATCH_H_
