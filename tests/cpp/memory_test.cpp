// Peak extra memory of every form of every op, on one thread: the most heap memory live at once
// during a call beyond what was live before it (inputs and outputs are the caller's, allocated
// first), counted over every malloc-family call of this process (operator new and the scratch
// arena's aligned_alloc included), each scratch arena emptied first. Checked, for the fast
// forms (chunk, recurrent), against the bound of docs/reliability.md,
//   extra <= 2 * 4 bytes * [B*T*(H*K + HV*(K+V)) + N*ceil(T/64)*HV*K*V] + threads * 2 MiB,
// i.e. O(T*(K+V)) activations plus O(T/C * K*V) chunk states plus per-thread scratch that does
// not grow with T; and for every form, for linear growth in T (4x the tokens, at most 4x the
// memory), which rules out anything proportional to T^2.
// A separate binary: replacing malloc would fight the sanitizers' allocators (not built there).
#include <gtest/gtest.h>
#include <malloc.h>
#include <omp.h>

#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "check/harness.hpp"
#include "core/scratch.hpp"
#include "linattn/ops.hpp"

namespace {

std::atomic<int64_t> g_live{0}, g_peak{0};

void count_allocation(void* p) {
  if (p == nullptr) return;
  const int64_t now = g_live.fetch_add(static_cast<int64_t>(malloc_usable_size(p))) +
                      static_cast<int64_t>(malloc_usable_size(p));
  int64_t peak = g_peak.load();
  while (now > peak && !g_peak.compare_exchange_weak(peak, now)) {
  }
}

void count_free(void* p) {
  if (p != nullptr) g_live.fetch_sub(static_cast<int64_t>(malloc_usable_size(p)));
}

}  // namespace

// glibc's own entry points, under the names it exports for exactly this purpose.
extern "C" {
void* __libc_malloc(size_t size);
void __libc_free(void* p);
void* __libc_calloc(size_t count, size_t size);
void* __libc_realloc(void* p, size_t size);
void* __libc_memalign(size_t alignment, size_t size);

void* malloc(size_t size) {
  void* p = __libc_malloc(size);
  count_allocation(p);
  return p;
}
void free(void* p) {
  count_free(p);
  __libc_free(p);
}
void* calloc(size_t count, size_t size) {
  void* p = __libc_calloc(count, size);
  count_allocation(p);
  return p;
}
void* realloc(void* p, size_t size) {
  count_free(p);
  void* q = __libc_realloc(p, size);
  if (q != nullptr) count_allocation(q);
  else if (size != 0) count_allocation(p);  // failed: p is still live
  return q;
}
void* memalign(size_t alignment, size_t size) {
  void* p = __libc_memalign(alignment, size);
  count_allocation(p);
  return p;
}
void* aligned_alloc(size_t alignment, size_t size) { return memalign(alignment, size); }
int posix_memalign(void** out, size_t alignment, size_t size) {
  *out = memalign(alignment, size);
  return *out ? 0 : ENOMEM;
}
}  // extern "C"

namespace linattn::check {
namespace {

// One thread: with several, how many work items hold their buffers at the same moment depends
// on scheduling, so the peak would not be reproducible. Per-item buffers are O(T) each, and at
// most one item per thread is in flight.
constexpr int kThreads = 1;
constexpr int64_t kPerThread = int64_t{2} << 20;

// Peak bytes live during `call` beyond those live before it, every scratch arena empty.
template <typename Call>
int64_t peak_extra(Call&& call) {
#pragma omp parallel num_threads(kThreads)
  ScratchArena::local().release();
  ScratchArena::local().release();
  const int64_t before = g_live.load();
  g_peak.store(before);
  call();
  return g_peak.load() - before;
}

Case memory_case(Op op, int64_t T) {
  Case c;
  c.op = op;
  c.B = 1;
  c.T = T;
  c.H = 2;
  c.HV = 2;
  c.K = c.V = 32;
  c.n_h = op_spec(op).takes_num_householder ? 2 : 1;
  c.initial_state = c.output_final_state = op_spec(op).causal;
  c.l2norm = op_spec(op).takes_l2norm;
  return c;
}

// The documented bound (see the top of this file) for a case on kThreads threads.
int64_t bound(const Case& c) {
  const int64_t tokens = c.T * c.n_h, N = c.B;
  const int64_t activations = c.B * tokens * (c.H * c.K + c.HV * (c.K + c.V));
  const int64_t states = N * ((tokens + 63) / 64) * c.HV * c.K * c.V;
  return 2 * 4 * (activations + states) + kThreads * kPerThread;
}

struct Measured {
  int64_t forward = -1, backward = -1;
};

// Peak extra memory of one form, forward and backward; -1 for a pass that does not exist.
Measured measure(const Case& c, Form form) {
  Measured m;
  const Inputs in = make_inputs(c, DType::f32);
  const OpArgs a = in.args(c);
  const OutputShapes shapes = output_shapes(c.op, a);
  Buffer o(DType::f32, shapes.o), state, d_o(DType::f32, shapes.o);
  if (c.output_final_state) state = Buffer(DType::f32, shapes.final_state);
  for (int64_t i = 0; i < d_o.numel(); ++i) d_o.set(i, std::sin(0.1 * i));
  auto like = [](const Buffer& b) { return b.given() ? Buffer(b.dtype(), b.shape()) : Buffer(); };
  Gradients gr{like(in.q), like(in.k), like(in.v), like(in.g), like(in.gk), like(in.beta),
               like(in.initial_state)};
  const auto run_forward = [&] { forward(c.op, form, a, {o.view(), state.view()}); };
  const auto run_backward = [&] {
    backward(c.op, form, a, {d_o.view(), {}},
             {gr.dq.view(), gr.dk.view(), gr.dv.view(), gr.dg.view(), gr.dgk.view(),
              gr.dbeta.view(), gr.dinitial_state.view()});
  };
  omp_set_num_threads(kThreads);
  if (has_form(c.op, form, false)) {
    run_forward();  // warm-up: the OpenMP pool and other once-per-process allocations
    m.forward = peak_extra(run_forward);
  }
  if (has_form(c.op, form, true)) {
    run_backward();
    m.backward = peak_extra(run_backward);
  }
  return m;
}

TEST(Memory, PeakExtraIsLinearInTAndWithinBound) {
  constexpr int64_t kShort = 1024, kLong = 4096;
  std::printf("%-22s %-10s %-8s %12s %12s %12s %12s\n", "op", "form", "pass", "T=1024 KiB",
              "T=4096 KiB", "bound KiB", "bytes/token");
  for (int i = 0; i < kNumOps; ++i) {
    const Op op = static_cast<Op>(i);
    for (Form form : {Form::reference, Form::chunk, Form::recurrent}) {
      const Case short_case = memory_case(op, kShort), long_case = memory_case(op, kLong);
      const Measured s = measure(short_case, form), l = measure(long_case, form);
      for (int pass = 0; pass < 2; ++pass) {
        const int64_t small = pass ? s.backward : s.forward, large = pass ? l.backward : l.forward;
        if (small < 0) continue;
        const std::string what = std::string(op_name(op)) + " " + form_name(form) +
                                 (pass ? " backward" : " forward");
        std::printf("%-22s %-10s %-8s %12.1f %12.1f %12.1f %12.1f\n", op_name(op), form_name(form),
                    pass ? "backward" : "forward", small / 1024.0, large / 1024.0,
                    bound(long_case) / 1024.0, double(large - small) / double(kLong - kShort));
        if (form != Form::reference) {  // the fp64 oracle holds fp64 copies: not bounded here
          EXPECT_LE(large, bound(long_case)) << what;
          EXPECT_LE(small, bound(short_case)) << what;
        }
        // Linear in T: 4x the tokens adds at most 3x what T = 1024 needed (per-thread scratch
        // that does not grow with T only makes this easier); T^2 memory would add 15x.
        EXPECT_LE(large - small, 3 * small + 4096) << what;
      }
    }
  }
}

}  // namespace
}  // namespace linattn::check
