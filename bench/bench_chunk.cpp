// Chunk-parallel forward and backward of the gated family and the delta family at issues 3/4's
// shape (B=1, H=16, T=4096, K=V=128, fp32), on the OpenMP threads in use (OMP_NUM_THREADS).
// GFLOP/s counts the dense chunked forward FLOPs of algorithms.md §5 per token and head:
// 2C(K+V) + 4KV (gated family), 6CK + 4CV + C^2/3 + 6KV (delta rules), plus 3(c+1)K (c = 16)
// for kda's per-channel gated score matrices (§4.8d).
#include <benchmark/benchmark.h>

#include <string>

#include "check/harness.hpp"
#include "linattn/ops.hpp"

namespace {

using namespace linattn;
using namespace linattn::check;

Case target_case(Op op, int64_t T) {
  Case c;
  c.op = op;
  c.B = 1;
  c.T = T;
  c.H = c.HV = 16;
  c.K = c.V = 128;
  c.initial_state = false;
  c.output_final_state = false;
  c.l2norm = op_spec(op).takes_l2norm;
  return c;
}

double forward_flops(const Case& c) {
  const double C = 64, K = double(c.K), V = double(c.V);
  const double per_token = (op_spec(c.op).takes_beta ? 6 * C * K + 4 * C * V + C * C / 3 + 6 * K * V
                                                     : 2 * C * (K + V) + 4 * K * V) +
                           (op_spec(c.op).takes_beta && op_spec(c.op).takes_gk ? 3 * (16 + 1) * K : 0);
  return double(c.B * c.T * c.H) * per_token;
}

void BM_ChunkForward(benchmark::State& state) {
  const Case c = target_case(static_cast<Op>(state.range(0)), state.range(1));
  const DType dtype = state.range(2) ? DType::bf16 : DType::f32;
  const Inputs in = make_inputs(c, dtype);
  const OpArgs args = in.args(c);
  const Buffer o(dtype, output_shapes(c.op, args).o);
  for (auto _ : state) forward(c.op, Form::chunk, args, {o.view(), {}});
  state.counters["GFLOP/s"] = benchmark::Counter(forward_flops(c), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["tokens/s"] = benchmark::Counter(double(c.T), benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(std::string(op_name(c.op)) + " " + dtype_name(dtype));
}

void BM_ChunkBackward(benchmark::State& state) {
  const Case c = target_case(static_cast<Op>(state.range(0)), state.range(1));
  const Inputs in = make_inputs(c, DType::f32);
  const Outputs out = run_forward(c, in, Form::chunk);
  const OpArgs args = in.args(c);
  const Buffer dq(DType::f32, in.q.shape()), dk(DType::f32, in.k.shape()), dv(DType::f32, in.v.shape());
  const Buffer dg = in.g.given() ? Buffer(DType::f32, in.g.shape()) : Buffer();
  const Buffer dgk = in.gk.given() ? Buffer(DType::f32, in.gk.shape()) : Buffer();
  for (auto _ : state)
    backward(c.op, Form::chunk, args, {out.o.view(), {}},
             {dq.view(), dk.view(), dv.view(), dg.view(), dgk.view(), {}, {}});
  state.counters["tokens/s"] = benchmark::Counter(double(c.T), benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(op_name(c.op));
}

// Args: op, T, bf16 inputs (1) or fp32 (0).
#define GATED_OPS                                                                                   \
  ->Args({static_cast<int>(Op::linear_attn), 4096, 0})->Args({static_cast<int>(Op::simple_gla), 4096, 0}) \
  ->Args({static_cast<int>(Op::gla), 4096, 0})->Unit(benchmark::kMillisecond)->UseRealTime()
#define DELTA_OPS                                                                        \
  ->Args({static_cast<int>(Op::delta_rule), 4096, 0})                                      \
  ->Args({static_cast<int>(Op::gated_delta_rule), 4096, 0})                                \
  ->Args({static_cast<int>(Op::kda), 4096, 0})
BENCHMARK(BM_ChunkForward) GATED_OPS DELTA_OPS->Args({static_cast<int>(Op::simple_gla), 4096, 1});
BENCHMARK(BM_ChunkBackward) GATED_OPS DELTA_OPS;

}  // namespace

BENCHMARK_MAIN();
