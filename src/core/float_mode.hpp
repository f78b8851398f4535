// Subnormal floats out of the fast forms: flush-to-zero (FTZ: a result below the smallest normal
// float becomes 0) and denormals-are-zero (DAZ: such an operand reads as 0) for the duration of a
// call. Strong decays make exp() of large negative sums land in the subnormal range, and on x86
// every multiply or add that takes or gives a subnormal goes through a microcode assist ~100x
// slower than the normal path: without FTZ|DAZ a chunk call with strong gates took several times
// the time of the same call with mild ones. The values flushed are below 1.2e-38 of terms that are
// O(1): no result changes beyond fp32 rounding. The oracles keep the caller's (IEEE) mode.
#pragma once

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#include <immintrin.h>
#define LINATTN_HAS_MXCSR 1
#else
#define LINATTN_HAS_MXCSR 0
#endif

namespace linattn {

#if LINATTN_HAS_MXCSR
inline constexpr unsigned kFlushDenormalBits = 0x8040u;  // MXCSR FTZ (bit 15) | DAZ (bit 6)
inline unsigned float_mode() { return _mm_getcsr(); }
inline void set_float_mode(unsigned mode) { _mm_setcsr(mode); }
#else
inline constexpr unsigned kFlushDenormalBits = 0;  // other targets: the mode is left alone
inline unsigned float_mode() { return 0; }
inline void set_float_mode(unsigned) {}
#endif

// Sets the calling thread's floating-point mode to `mode` and puts the previous one back on
// exit. parallel_for gives every OpenMP thread the mode of the thread that called it, so that
// all threads of a call compute alike (bitwise identical results for any thread count).
class ScopedFloatMode {
 public:
  explicit ScopedFloatMode(unsigned mode) : saved_(float_mode()) {
    if (mode != saved_) set_float_mode(mode);
  }
  ~ScopedFloatMode() {
    if (float_mode() != saved_) set_float_mode(saved_);
  }
  ScopedFloatMode(const ScopedFloatMode&) = delete;
  ScopedFloatMode& operator=(const ScopedFloatMode&) = delete;

 private:
  unsigned saved_;
};

// The mode of a call: the caller's, with subnormals flushed (FTZ | DAZ) when it runs a fast form
// (`fast`), left as it is for the fp64 oracles.
class FlushDenormals : public ScopedFloatMode {
 public:
  explicit FlushDenormals(bool fast = true)
      : ScopedFloatMode(fast ? float_mode() | kFlushDenormalBits : float_mode()) {}
};

}  // namespace linattn
