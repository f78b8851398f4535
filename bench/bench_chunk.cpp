// Chunk-parallel forward and backward of the gated family and the delta family at the
// target shape (B=1, H=16, T=4096, K=V=128, fp32), on the OpenMP threads in use (OMP_NUM_THREADS).
// GFLOP/s counts the dense chunked forward FLOPs of algorithms.md §5 per token and head:
// 2C(K+V) + 4KV (gated family), 6CK + 4CV + C^2/3 + 6KV (delta rules), plus 3(c+1)K (c = 16)
// for kda's per-channel gated score matrices (§4.8d), and §4.8d's 10CK + 8CV + C^2/3 + 8KV for
// dplr_delta_rule (RWKV-7), also at its head size K = V = 64 and in the recurrent form (9KV per
// token, also what the chunk form runs at key sizes up to 256).
#include <benchmark/benchmark.h>

#include <string>

#include "check/harness.hpp"
#include "linattn/ops.hpp"
#include "ops/dplr/chunk.hpp"

namespace {

using namespace linattn;
using namespace linattn::check;

Case target_case(Op op, int64_t T, int64_t head_dim = 128, int64_t heads = 16) {
  Case c;
  c.op = op;
  c.B = 1;
  c.T = T;
  c.H = c.HV = heads;
  c.K = c.V = head_dim;
  c.initial_state = false;
  c.output_final_state = false;
  c.l2norm = op_spec(op).takes_l2norm;
  return c;
}

double forward_flops(const Case& c, Form form = Form::chunk) {
  const double C = 64, K = double(c.K), V = double(c.V);
  double per_token = (op_spec(c.op).takes_beta ? 6 * C * K + 4 * C * V + C * C / 3 + 6 * K * V
                                                : 2 * C * (K + V) + 4 * K * V) +
                      (op_spec(c.op).takes_beta && op_spec(c.op).takes_gk ? 3 * (16 + 1) * K : 0);
  if (op_spec(c.op).takes_ab)  // (the chunk form runs the token loop up to kRecurrentMaxKey)
    per_token = form == Form::chunk && c.K > dplr::kRecurrentMaxKey ? 10 * C * K + 8 * C * V + C * C / 3 + 8 * K * V
                                                                    : 9 * K * V;
  return double(c.B * c.T * c.H) * per_token;
}

void time_forward(benchmark::State& state, const Case& c, DType dtype, Form form) {
  const Inputs in = make_inputs(c, dtype);
  const OpArgs args = in.args(c);
  const Buffer o(dtype, output_shapes(c.op, args).o);
  for (auto _ : state) forward(c.op, form, args, {o.view(), {}});
  state.counters["GFLOP/s"] = benchmark::Counter(forward_flops(c, form), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["tokens/s"] = benchmark::Counter(double(c.T), benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(std::string(op_name(c.op)) + " " + dtype_name(dtype) + " K=V=" + std::to_string(c.K));
}

void BM_ChunkForward(benchmark::State& state) {
  time_forward(state, target_case(static_cast<Op>(state.range(0)), state.range(1)),
               state.range(2) ? DType::bf16 : DType::f32, Form::chunk);
}

// dplr_delta_rule at head size state.range(0), fp32: chunk form, and (range(1) = 1) recurrent.
void BM_DplrForward(benchmark::State& state) {
  time_forward(state, target_case(Op::dplr_delta_rule, 4096, state.range(0)), DType::f32,
               state.range(1) ? Form::recurrent : Form::chunk);
}

// One decode step of dplr_delta_rule (B=1, T=1, H=16, K=V=range(0), fp32) with its state: into a
// separate final state (range(1) = 0: the old state read, the new one written) or in place (1).
// ggml's rwkv_wkv7 does the former; docs/performance.md has the two side by side.
void BM_DplrDecode(benchmark::State& state) {
  Case c = target_case(Op::dplr_delta_rule, 1, state.range(0));
  c.initial_state = c.output_final_state = true;
  const Inputs in = make_inputs(c, DType::f32);
  OpArgs args = in.args(c);
  const OutputShapes shapes = output_shapes(c.op, args);
  const Buffer o(DType::f32, shapes.o), separate(DType::f32, shapes.final_state);
  const TensorView final_state = state.range(1) ? args.initial_state : separate.view();
  for (auto _ : state) forward(c.op, Form::recurrent, args, {o.view(), final_state});
  state.counters["GFLOP/s"] = benchmark::Counter(forward_flops(c, Form::recurrent), benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(std::string(state.range(1) ? "in place" : "separate state") + " K=V=" + std::to_string(c.K));
}

void time_backward(benchmark::State& state, const Case& c) {
  const Inputs in = make_inputs(c, DType::f32);
  const Outputs out = run_forward(c, in, Form::chunk);
  const OpArgs args = in.args(c);
  const Buffer dq(DType::f32, in.q.shape()), dk(DType::f32, in.k.shape()), dv(DType::f32, in.v.shape());
  const Buffer dg = in.g.given() ? Buffer(DType::f32, in.g.shape()) : Buffer();
  const Buffer dgk = in.gk.given() ? Buffer(DType::f32, in.gk.shape()) : Buffer();
  const Buffer da = in.a.given() ? Buffer(DType::f32, in.a.shape()) : Buffer();
  const Buffer db = in.b.given() ? Buffer(DType::f32, in.b.shape()) : Buffer();
  for (auto _ : state)
    backward(c.op, Form::chunk, args, {out.o.view(), {}},
             {dq.view(), dk.view(), dv.view(), dg.view(), dgk.view(), {}, {}, da.view(), db.view()});
  state.counters["tokens/s"] = benchmark::Counter(double(c.T), benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(std::string(op_name(c.op)) + " K=V=" + std::to_string(c.K));
}

void BM_ChunkBackward(benchmark::State& state) {
  time_backward(state, target_case(static_cast<Op>(state.range(0)), state.range(1)));
}

void BM_DplrBackward(benchmark::State& state) {
  time_backward(state, target_case(Op::dplr_delta_rule, 4096, state.range(0)));
}

// One long sequence with fewer heads than threads (the few-items mode,
// ops/common/chunk_windows.hpp): B=1, T=65536, K=V=128. Args: op, heads.
void BM_FewItemsForward(benchmark::State& state) {
  time_forward(state, target_case(static_cast<Op>(state.range(0)), 65536, 128, state.range(1)), DType::f32,
               Form::chunk);
}
void BM_FewItemsBackward(benchmark::State& state) {
  time_backward(state, target_case(static_cast<Op>(state.range(0)), 65536, 128, state.range(1)));
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
BENCHMARK(BM_DplrForward)->Args({128, 0})->Args({64, 0})->Args({128, 1})->Args({64, 1})
    ->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_DplrDecode)->ArgsProduct({{128, 64}, {0, 1}})->Unit(benchmark::kMicrosecond)->UseRealTime();
#define FEW_ITEMS                                                                                       \
  ->ArgsProduct({{static_cast<int>(Op::gated_delta_rule), static_cast<int>(Op::kda),                    \
                  static_cast<int>(Op::dplr_delta_rule)}, {1, 2}})->Unit(benchmark::kMillisecond)->UseRealTime()
BENCHMARK(BM_FewItemsForward) FEW_ITEMS;
BENCHMARK(BM_FewItemsBackward) FEW_ITEMS;
BENCHMARK(BM_DplrBackward)->Arg(128)->Arg(64)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
