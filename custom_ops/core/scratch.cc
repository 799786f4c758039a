#include "custom_ops/core/scratch.h"

#include <pthread.h>

#include <cstddef>
#include <cstring>
#include <mutex>
#include <new>

namespace lowbit {
namespace {

constexpr std::size_t kAlignment = 64;

struct Block {
  void* data = nullptr;
  std::int64_t capacity = 0;
};

// One thread's blocks, on the heap.
struct ThreadScratch {
  Block blocks[static_cast<int>(ScratchSlot::kCount)];
  ~ThreadScratch() {
    for (Block& b : blocks) ::operator delete(b.data, std::align_val_t{kAlignment});
  }
};

// Each thread's ThreadScratch is freed by a pthread key's destructor, which
// receives the pointer as its argument, rather than by the destructor of a C++
// thread_local object. A thread_local of a library loaded with dlopen lives in
// the thread's dynamic TLS block, which glibc frees inside the pthread_join of
// the thread (or when it reuses the thread's stack): ThreadSanitizer then
// reports that free as racing with the destructor's read of the block at the
// thread's exit (the join's synchronisation is only recorded after it), a
// false positive, but one that fails the sanitizer tests now and then. The
// thread_local below is a plain pointer, so nothing reads it at exit.
pthread_key_t scratch_key;
bool key_made = false;
std::once_flag key_once;

void DestroyThreadScratch(void* scratch) { delete static_cast<ThreadScratch*>(scratch); }

// Deletes the key when the library is unloaded (or the process exits), so that
// a thread exiting after a dlclose does not call DestroyThreadScratch's
// unmapped code (its blocks are then not freed; a thread_local's destructor
// would instead have kept the library loaded).
struct KeyOwner {
  ~KeyOwner() {
    if (key_made) pthread_key_delete(scratch_key);
  }
} key_owner;

thread_local ThreadScratch* thread_scratch = nullptr;

ThreadScratch& CurrentThreadScratch() {
  if (thread_scratch == nullptr) {
    std::call_once(key_once,
                   [] { key_made = pthread_key_create(&scratch_key, &DestroyThreadScratch) == 0; });
    auto* scratch = new ThreadScratch;
    // Without a key (the process ran out of them, or it is being torn down)
    // the thread's blocks are not freed when it exits: a leak, not an error.
    if (key_made) pthread_setspecific(scratch_key, scratch);
    thread_scratch = scratch;
  }
  return *thread_scratch;
}

}  // namespace

void* ScratchBytes(ScratchSlot slot, std::int64_t bytes) {
  Block& block = CurrentThreadScratch().blocks[static_cast<int>(slot)];
  if (bytes > block.capacity) {
    ::operator delete(block.data, std::align_val_t{kAlignment});  // the old block goes first
    block.data = nullptr;
    block.capacity = 0;
    const auto size = static_cast<std::size_t>(bytes);
    block.data = ::operator new(size, std::align_val_t{kAlignment});
    std::memset(block.data, 0, size);
    block.capacity = bytes;
  }
  return block.data;
}

}  // namespace lowbit
