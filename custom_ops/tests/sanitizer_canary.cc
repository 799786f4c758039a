// Deliberate defects, one per function, so that tests/core/test_sanitizers.py can
// check that a sanitizer report raised inside a library loaded into Python
// (here through ctypes, like the delegate through the TFLite runtime) really
// fails the test. Built only for -DLOWBIT_SANITIZE=... with
// -DLOWBIT_BUILD_CHECKS=ON (libsanitizer_canary.so); never linked into
// anything else.
#include <climits>
#include <cstdlib>

namespace {
int g_unsynchronized = 0;
}

extern "C" {

// Reads one int past a heap block of n ints (AddressSanitizer).
__attribute__((visibility("default"), noinline)) int lowbit_canary_heap_overflow(int n) {
  int* block = static_cast<int*>(std::malloc(sizeof(int) * static_cast<unsigned>(n)));
  volatile int* p = block;
  const int value = p[n];
  std::free(block);
  return value;
}

// Signed overflow of INT_MAX + x (UndefinedBehaviorSanitizer).
__attribute__((visibility("default"), noinline)) int lowbit_canary_signed_overflow(int x) {
  volatile int big = INT_MAX;
  return big + x;
}

// Allocates n bytes and drops the only pointer (LeakSanitizer).
__attribute__((visibility("default"), noinline)) void lowbit_canary_leak(int n) {
  char* volatile block = new char[static_cast<unsigned>(n)];
  block[0] = 1;
}

// Increments a global n times without synchronisation; called from two
// threads at once (ThreadSanitizer).
__attribute__((visibility("default"), noinline)) void lowbit_canary_race(int n) {
  for (int i = 0; i < n; ++i) {
    g_unsynchronized = g_unsynchronized + 1;
    asm volatile("" ::: "memory");
  }
}

}  // extern "C"
