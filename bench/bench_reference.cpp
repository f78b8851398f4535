// Google Benchmark: the fp64 reference oracle (Form::reference) of every op, forward and
// backward, at one small shape, plus the peak-FMA probe. The oracle is not a fast path; these
// rows exist so later rows (chunk, recurrent) can be read as ratios to it in the same run
// (docs/performance.md). Shape: B=1, H=HV=2, T=256, K=V=32; delta_product with
// num_householder=2. Inputs are fp32, gates valid by construction: g, gk = -uniform(0.01, 1),
// beta = uniform(0, 1); the delta-rule ops use use_qk_l2norm_in_kernel=true (as fla's models
// do) so that the state stays bounded.
#include <benchmark/benchmark.h>

#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "linattn/bench.hpp"
#include "linattn/ops.hpp"

namespace {

using linattn::DType;
using linattn::Form;
using linattn::Op;
using linattn::TensorView;

constexpr int64_t kB = 1, kH = 2, kT = 256, kK = 32, kV = 32;
constexpr int kDeltaProductSteps = 2;

// One owned fp32 buffer and its view.
struct Buffer {
  std::vector<float> data;
  TensorView view;
  void make(std::vector<int64_t> shape, std::mt19937& rng, float lo, float hi) {
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    data.resize(static_cast<size_t>(n));
    if (lo == hi) {
      std::fill(data.begin(), data.end(), lo);
    } else {
      std::uniform_real_distribution<float> dist(lo, hi);
      for (float& x : data) x = dist(rng);
    }
    view = TensorView::contiguous_from(data.data(), DType::f32, shape);
  }
};

// Inputs, outputs, upstream gradients and gradients of one op at the benchmark shape.
struct Case {
  Buffer q, k, v, g, gk, beta, o, d_o, dq, dk, dv, dg, dgk, dbeta;
  linattn::OpArgs args;
  linattn::OpOutputs out;
  linattn::OpGradOutputs grad_out;
  linattn::OpGrads grads;

  explicit Case(Op op) {
    const linattn::OpSpec& spec = linattn::op_spec(op);
    const int64_t n_h = spec.takes_num_householder ? kDeltaProductSteps : 1;
    const int64_t TK = kT * n_h;
    std::mt19937 rng(1234 + static_cast<int>(op));
    q.make({kB, kT, kH, kK}, rng, -1.0f, 1.0f);
    k.make({kB, TK, kH, kK}, rng, -1.0f, 1.0f);
    v.make({kB, TK, kH, kV}, rng, -1.0f, 1.0f);
    args.q = q.view;
    args.k = k.view;
    args.v = v.view;
    args.num_householder = static_cast<int32_t>(n_h);
    args.use_qk_l2norm_in_kernel = spec.takes_l2norm;
    if (spec.takes_g) {
      g.make({kB, kT, kH}, rng, -1.0f, -0.01f);
      args.g = g.view;
    }
    if (spec.takes_gk) {
      gk.make({kB, kT, kH, kK}, rng, -1.0f, -0.01f);
      args.gk = gk.view;
    }
    if (spec.takes_beta) {
      beta.make({kB, TK, kH}, rng, 0.0f, 1.0f);
      args.beta = beta.view;
    }
    const linattn::OutputShapes shapes = linattn::output_shapes(op, args);
    o.make(shapes.o, rng, 0.0f, 0.0f);
    out.o = o.view;
    d_o.make(shapes.o, rng, -1.0f, 1.0f);
    grad_out.d_o = d_o.view;
    auto grad_like = [&](Buffer& grad, const Buffer& input, TensorView& slot) {
      if (!input.view.given()) return;
      std::vector<int64_t> shape(input.view.shape.begin(),
                                 input.view.shape.begin() + input.view.ndim);
      grad.make(shape, rng, 0.0f, 0.0f);
      slot = grad.view;
    };
    grad_like(dq, q, grads.dq);
    grad_like(dk, k, grads.dk);
    grad_like(dv, v, grads.dv);
    grad_like(dg, g, grads.dg);
    grad_like(dgk, gk, grads.dgk);
    grad_like(dbeta, beta, grads.dbeta);
  }
};

void set_counters(benchmark::State& state) {
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(kB * kT),
                                                 benchmark::Counter::kIsIterationInvariantRate);
  state.counters["threads"] = omp_get_max_threads();
}

void BM_ReferenceForward(benchmark::State& state, Op op) {
  Case c(op);
  for (auto _ : state) {
    linattn::forward(op, Form::reference, c.args, c.out);
    benchmark::DoNotOptimize(c.o.data.data());
    benchmark::ClobberMemory();
  }
  set_counters(state);
}

void BM_ReferenceBackward(benchmark::State& state, Op op) {
  Case c(op);
  for (auto _ : state) {
    linattn::backward(op, Form::reference, c.args, c.grad_out, c.grads);
    benchmark::DoNotOptimize(c.dq.data.data());
    benchmark::ClobberMemory();
  }
  set_counters(state);
}

// GFLOP/s of the peak-FMA probe with state.range(0) threads (one 0.1 s probe per iteration).
void BM_PeakFMA(benchmark::State& state) {
  const int threads = static_cast<int>(state.range(0));
  double sum = 0.0;
  for (auto _ : state) sum += linattn::peak_fma_gflops(threads, 0.1);
  state.counters["GFLOP/s"] = sum / static_cast<double>(state.iterations());
  state.SetLabel(linattn::simd_target_name());
}
BENCHMARK(BM_PeakFMA)
    ->Arg(1)
    ->Arg(2)
    ->Iterations(3)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// Wall-clock time (UseRealTime): the reference runs on the OpenMP team, so the main thread's CPU
// time is not the elapsed time the rates must be computed from.
const bool kRegistered = [] {
  const std::string shape = "/B1_H2_T256_K32_V32";
  for (int i = 0; i < linattn::kNumOps; ++i) {
    const Op op = static_cast<Op>(i);
    const std::string name = linattn::op_name(op);
    const std::string suffix = name == "delta_product" ? shape + "_nh2" : shape;
    benchmark::RegisterBenchmark(("BM_ReferenceForward/" + name + suffix).c_str(),
                                 BM_ReferenceForward, op)
        ->Unit(benchmark::kMicrosecond)
        ->UseRealTime();
    benchmark::RegisterBenchmark(("BM_ReferenceBackward/" + name + suffix).c_str(),
                                 BM_ReferenceBackward, op)
        ->Unit(benchmark::kMicrosecond)
        ->UseRealTime();
  }
  return true;
}();

}  // namespace

BENCHMARK_MAIN();
