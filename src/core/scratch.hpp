// Aligned scratch memory reused across calls: hot loops ask for a buffer by slot and get the
// same (grown-only) allocation every time, so steady-state calls do no heap work.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <memory>
#include <new>

namespace linattn {

inline constexpr std::size_t kScratchAlignment = 64;  // one cache line, one AVX-512 vector
inline constexpr int kScratchSlots = 25;

class ScratchArena {
 public:
  // Slots are owned by one user each; kernels/gemm.cpp owns the last two, callers the rest.
  static constexpr int kGemmSlot = kScratchSlots - 1;

  // A buffer of at least `count` elements of T for `slot`, 64-byte aligned, contents undefined.
  template <typename T>
  T* get(int slot, std::size_t count) {
    return static_cast<T*>(bytes(slot, count * sizeof(T)));
  }

  // Frees every buffer of this arena (the memory test measures each call from empty arenas).
  void release() {
    for (Buffer& b : buffers_) b = Buffer{};
  }

  // The calling thread's arena.
  static ScratchArena& local() {
    thread_local ScratchArena arena;
    return arena;
  }

 private:
  struct Free {
    void operator()(void* p) const { std::free(p); }
  };
  void* bytes(int slot, std::size_t size) {
    Buffer& b = buffers_[slot];
    if (b.capacity < size) {
      const std::size_t rounded = (size + kScratchAlignment - 1) / kScratchAlignment * kScratchAlignment;
      void* p = std::aligned_alloc(kScratchAlignment, rounded);
      if (!p) throw std::bad_alloc();
      b.memory.reset(p);
      b.capacity = rounded;
    }
    return b.memory.get();
  }
  struct Buffer {
    std::unique_ptr<void, Free> memory;
    std::size_t capacity = 0;
  };
  Buffer buffers_[kScratchSlots];
};

}  // namespace linattn
