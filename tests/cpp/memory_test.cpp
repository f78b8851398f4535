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

#include <functional>
#include <initializer_list>
#include <memory>
#include <vector>

#include "check/harness.hpp"
#include "core/scratch.hpp"
#include "linattn/attention.hpp"
#include "linattn/conv1d.hpp"
#include "linattn/lla.hpp"
#include "linattn/ops.hpp"
#include "linattn/scan.hpp"
#include "ops/attention/check.hpp"
#include "ops/conv1d/check.hpp"
#include "ops/lla/check.hpp"
#include "ops/scan/check.hpp"

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

// The families with an API of their own. A problem holds the inputs, outputs and gradients
// of one call at one T (allocated before measuring) and the calls of each form and pass.
struct FamilyPass {
  std::string form, pass;
  std::function<void()> run;
};
struct FamilyProblem {
  std::vector<std::shared_ptr<void>> owned;  // inputs, outputs, gradients: alive for the calls
  std::vector<FamilyPass> passes;
  int64_t elements = 0;  // of the inputs and outputs of the forward (the bound's activations)
  template <typename T>
  T& own(T value) {
    auto p = std::make_shared<T>(std::move(value));
    owned.push_back(p);
    return *p;
  }
  Buffer& output(std::vector<int64_t> shape) {
    Buffer& b = own(Buffer(DType::f32, std::move(shape)));
    elements += b.numel();
    return b;
  }
  void count(std::initializer_list<const Buffer*> inputs) {
    for (const Buffer* b : inputs) elements += b->given() ? b->numel() : 0;
  }
  // A gradient buffer shaped like `input` (not given if the input is not).
  TensorView grad(const Buffer& input) {
    return input.given() ? own(Buffer(input.dtype(), input.shape())).view() : TensorView{};
  }
};

// Softmax attention: B = 1, 2 heads over 2 kv heads, K = V = 32.
FamilyProblem attention_problem(int64_t T) {
  FamilyProblem p;
  AttnCase c;
  c.T_ = T;
  c.H = c.Hkv = 2;
  c.K = c.V = 32;
  const AttnInputs& in = p.own(make_attn_inputs(c).to(DType::f32));
  p.count({&in.q, &in.k, &in.v});
  const TensorView o = p.output({1, T, 2, 32}).view(), lse = p.output({1, T, 2}).view();
  const TensorView d_o = p.own(Buffer(DType::f32, {1, T, 2, 32})).view();
  const AttentionGrads g{p.grad(in.q), p.grad(in.k), p.grad(in.v)};
  const AttentionArgs a{in.q.view(), in.k.view(), in.v.view(), {}, NAN, 0};
  for (Form form : {Form::reference, Form::chunk}) {
    p.passes.push_back({form_name(form), "forward", [=] { attention_forward(form, a, {o, lse}); }});
    p.passes.push_back({form_name(form), "backward",
                        [=] { attention_backward(form, a, o, lse, d_o, g); }});
  }
  return p;
}

// LLA: B = 1, 2 heads, K = V = 16 (its cost is O(T^2 K) like attention's: smaller T).
FamilyProblem lla_problem(int64_t T) {
  FamilyProblem p;
  lla::check::Case c;
  c.T = c.Tq = T;
  c.H = 2;
  c.K = c.V = 16;
  const lla::check::Inputs& in = p.own(lla::check::make_inputs(c, DType::f32));
  p.count({&in.q, &in.k, &in.v});
  lla::Args a;
  a.q = in.q.view();
  a.k = in.k.view();
  a.v = in.v.view();
  a.cg_max_iters = 8;  // the iteration count changes the time, not the memory
  const TensorView o = p.output({1, T, 2, 16}).view();
  const TensorView d_o = p.own(Buffer(DType::f32, {1, T, 2, 16})).view();
  const lla::Grads g{p.grad(in.q), p.grad(in.k), p.grad(in.v), {}};
  for (Form form : {Form::reference, Form::chunk, Form::recurrent}) {
    p.passes.push_back({form_name(form), "forward", [=] { lla::forward(form, a, o); }});
    if (lla::has_form(form, true))
      p.passes.push_back({form_name(form), "backward", [=] { lla::backward(form, a, d_o, g); }});
  }
  return p;
}

// Causal conv1d: D = 64 channels, W = 4, bias, initial and final state.
FamilyProblem conv1d_problem(int64_t T) {
  FamilyProblem p;
  const conv1d::Case c = conv1d::Case::of(1, T, 64, 4);
  const conv1d::Inputs& in = p.own(conv1d::make_inputs(c, DType::f32));
  p.count({&in.x, &in.weight, &in.bias, &in.residual, &in.initial_state});
  const Conv1dArgs a = in.args(c, true);
  const Conv1dOutputs out{p.output({1, T, 64}).view(), p.output({1, 64, 4}).view()};
  const Conv1dGradOutputs d_out{p.own(Buffer(DType::f32, {1, T, 64})).view(), {}};
  const Conv1dGrads g{p.grad(in.x), p.grad(in.weight), p.grad(in.bias), p.grad(in.residual),
                      p.grad(in.initial_state)};
  for (Form form : {Form::reference, Form::chunk}) {
    p.passes.push_back({form_name(form), "forward", [=] { causal_conv1d_forward(form, a, out); }});
    p.passes.push_back({form_name(form), "backward",
                        [=] { causal_conv1d_backward(form, a, d_out, g); }});
  }
  return p;
}

// Selective scan: D = 64 channels, N = 16 states, 1 group, D skip, initial and final state.
FamilyProblem scan_problem(int64_t T) {
  FamilyProblem p;
  const scan::Case c = scan::Case::of(1, T, 64, 16);
  const scan::Inputs& in = p.own(scan::make_inputs(c, DType::f32));
  p.count({&in.u, &in.delta, &in.A, &in.B, &in.C, &in.D, &in.z, &in.delta_bias,
           &in.initial_state});
  const ScanArgs a = in.args(c, true);
  const ScanOutputs out{p.output({1, T, 64}).view(), p.output({1, 64, 16}).view()};
  const ScanGradOutputs d_out{p.own(Buffer(DType::f32, {1, T, 64})).view(), {}};
  const ScanGrads g{p.grad(in.u), p.grad(in.delta), p.grad(in.A), p.grad(in.B), p.grad(in.C),
                    p.grad(in.D), p.grad(in.z), p.grad(in.delta_bias), p.grad(in.initial_state)};
  for (Form form : {Form::reference, Form::chunk}) {
    p.passes.push_back({form_name(form), "forward", [=] { selective_scan_forward(form, a, out); }});
    p.passes.push_back({form_name(form), "backward",
                        [=] { selective_scan_backward(form, a, d_out, g); }});
  }
  return p;
}

// Fast forms: extra <= 2 * 4 bytes * (elements of the forward's inputs and outputs) + threads *
// 2 MiB: O(T (K + V)) activations and per-thread scratch that does not grow with T. Every form,
// the fp64 oracles included: linear growth (4x the tokens add at most 3x the memory of the
// shorter call), which a T x T score matrix (16x) fails.
TEST(Memory, FamiliesPeakExtraIsLinearInTAndWithinBound) {
  struct Family {
    const char* name;
    FamilyProblem (*make)(int64_t);
    int64_t short_T, long_T;
  };
  const Family families[] = {{"attention", attention_problem, 1024, 4096},
                             {"lla_attention", lla_problem, 256, 1024},
                             {"causal_conv1d", conv1d_problem, 1024, 4096},
                             {"selective_scan", scan_problem, 1024, 4096}};
  omp_set_num_threads(kThreads);
  std::printf("%-16s %-10s %-8s %12s %12s %12s %12s\n", "family", "form", "pass", "short KiB",
              "long KiB", "bound KiB", "bytes/token");
  for (const Family& f : families) {
    FamilyProblem small = f.make(f.short_T), large = f.make(f.long_T);
    for (size_t i = 0; i < small.passes.size(); ++i) {
      int64_t extra[2];
      FamilyProblem* problems[2] = {&small, &large};
      for (int j = 0; j < 2; ++j) {
        problems[j]->passes[i].run();  // warm-up
        extra[j] = peak_extra(problems[j]->passes[i].run);
      }
      const FamilyPass& pass = small.passes[i];
      const int64_t bound_short = 2 * 4 * small.elements + kThreads * kPerThread;
      const int64_t bound_long = 2 * 4 * large.elements + kThreads * kPerThread;
      std::printf("%-16s %-10s %-8s %12.1f %12.1f %12.1f %12.1f\n", f.name, pass.form.c_str(),
                  pass.pass.c_str(), extra[0] / 1024.0, extra[1] / 1024.0, bound_long / 1024.0,
                  double(extra[1] - extra[0]) / double(f.long_T - f.short_T));
      const std::string what = std::string(f.name) + " " + pass.form + " " + pass.pass;
      if (pass.form != "reference") {
        EXPECT_LE(extra[0], bound_short) << what;
        EXPECT_LE(extra[1], bound_long) << what;
      }
      EXPECT_LE(extra[1] - extra[0], 3 * extra[0] + 4096) << what;
    }
  }
}

}  // namespace
}  // namespace linattn::check
