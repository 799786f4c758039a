// Per-thread scratch memory for the kernels' two-pass paths (the channel-major
// NEON conv's int8 residual and bit-packed output, core/bconv2d.cc,
// core/bconv2d_bitpacked.cc): a layer's intermediate floats, often hundreds
// of KB. A fresh allocation per call would map, zero-fill and unmap that many
// pages on every call (and value-initialising a std::vector writes it once
// more); this buffer is kept by the calling thread and only grows, to the
// largest call it made in that slot.
#ifndef LOWBIT_CORE_SCRATCH_H_
#define LOWBIT_CORE_SCRATCH_H_

#include <cstdint>

namespace lowbit {

// The users of ScratchFloats; one buffer each per thread, so that one user's
// buffer stays valid while it calls into another's.
enum class ScratchSlot : int { kResidual = 0, kDotProducts = 1, kCount = 2 };

// `count` floats owned by the calling thread for `slot`, left uninitialised
// (the caller writes every element it reads), valid until this thread's next
// ScratchFloats call for the same slot. Other threads may read and write them
// meanwhile (a ParallelFor's workers). Throws std::bad_alloc like new[].
float* ScratchFloats(ScratchSlot slot, std::int64_t count);

}  // namespace lowbit

#endif  // LOWBIT_CORE_SCRATCH_H_
