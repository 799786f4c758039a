#include "custom_ops/core/scratch.h"

#include <cstddef>
#include <memory>

namespace lowbit {
namespace {

struct Buffer {
  std::unique_ptr<float[]> data;
  std::int64_t capacity = 0;
};

thread_local Buffer buffers[static_cast<int>(ScratchSlot::kCount)];

}  // namespace

float* ScratchFloats(ScratchSlot slot, std::int64_t count) {
  Buffer& buffer = buffers[static_cast<int>(slot)];
  if (count > buffer.capacity) {
    buffer.data.reset();  // the old block goes first: never both at once
    buffer.capacity = 0;
    buffer.data.reset(new float[static_cast<std::size_t>(count)]);
    buffer.capacity = count;
  }
  return buffer.data.get();
}

}  // namespace lowbit
