// Test harness shared by the GoogleTest suite, the CLI's `check` and the benchmarks: owning
// buffers, random cases with controllable gate regimes, and the checks that establish the fp64
// oracle (independent forms, finite differences, varlen and split-run consistency) and compare
// every other form against it.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "linattn/ops.hpp"

namespace linattn::check {

// An owning, contiguous tensor.
class Buffer {
 public:
  Buffer() = default;
  Buffer(DType dtype, std::vector<int64_t> shape);
  bool given() const { return !shape_.empty(); }
  TensorView view() const;
  int64_t numel() const { return numel_; }
  DType dtype() const { return dtype_; }
  const std::vector<int64_t>& shape() const { return shape_; }
  double get(int64_t i) const;
  void set(int64_t i, double value);
  Buffer to(DType dtype) const;  // converted copy (rounds to the new dtype)

 private:
  DType dtype_ = DType::f32;
  std::vector<int64_t> shape_;
  int64_t numel_ = 0;
  std::vector<double> storage_;  // 8-byte aligned backing for every dtype
};

// Relative error ||got - want||_2 / ||want||_2 (absolute when want is all zeros).
double rel_error(const Buffer& got, const Buffer& want);
// Every element, bit for bit (a NaN or a -0 would differ too): the determinism tests' check.
bool bitwise_equal(const Buffer& a, const Buffer& b);

// Tokens [start, start + len) of a [B, T*steps, ...] buffer (dimension 1), as batch row 0.
Buffer slice_tokens(const Buffer& b, int64_t batch, int64_t start, int64_t len, int64_t steps);
// Row n of a [N, ...] buffer as a [1, ...] buffer.
Buffer slice_row(const Buffer& b, int64_t n);

enum class Gates {
  typical,       // log decays in [-1, -0.01], beta in [0.1, 1]
  decay_near_1,  // log decays of -1e-6: almost no forgetting
  decay_near_0,  // log decays in [-30, -10]: the state is almost reset every token
  beta_near_0,   // beta = 1e-6
  beta_near_2,   // beta = 2 - 1e-6 with unit-norm keys: eigenvalue ~ -1 (reflections)
  beta_wide,     // beta uniform in [0, 2]
  decay_wide,    // log decays log-uniform in [-20, -1e-6]: every regime in one sequence
  beta_near_2_decay_near_1,  // both: reflections that are hardly forgotten (long-run stability)
  abar_near_0,   // dplr: in-context learning rate 1e-6 (b ~ 0: almost no removal)
  abar_near_1,   // dplr: learning rate 1 - 1e-6 (the removal key's component is erased)
};
const char* gates_name(Gates gates);

struct Case {
  Op op = Op::linear_attn;
  int64_t B = 1, T = 1, H = 1, HV = 1, K = 4, V = 4;
  int32_t n_h = 1;
  std::vector<int64_t> seqlens;  // non-empty: one row split by cu_seqlens (B = 1, T = sum)
  bool initial_state = true;
  bool output_final_state = true;
  bool normalize = false;
  bool l2norm = false;
  bool gated = true;             // delta_product: pass g (it is optional there)
  Gates gates = Gates::typical;
  uint64_t seed = 1;
  std::string describe() const;  // e.g. "B=2 T=37 H=2 HV=4 K=8 V=6 h0 l2norm gates=typical"
};

// Owning inputs of one case.
struct Inputs {
  Buffer q, k, v, g, gk, beta, initial_state, cu_seqlens, a, b;
  OpArgs args(const Case& c) const;
  Inputs to(DType dtype) const;  // q, k, v, gates and state converted (cu_seqlens kept)
};
Inputs make_inputs(const Case& c, DType dtype);

struct Outputs {
  Buffer o, final_state;
};
struct Gradients {
  Buffer dq, dk, dv, dg, dgk, dbeta, dinitial_state, da, db;
  // (name, gradient) of every gradient that exists for this case.
  std::vector<std::pair<const char*, const Buffer*>> list() const;
};

Outputs run_forward(const Case& c, const Inputs& in, Form form);
Gradients run_backward(const Case& c, const Inputs& in, Form form, const Buffer& d_o,
                       const Buffer& dfinal_state);

// Checks of the fp64 oracle itself; each returns a relative error.
double independent_form_error(const Case& c);  // vs an attention/matrix form written apart
double finite_difference_error(const Case& c); // reference backward vs central differences
double varlen_error(const Case& c);            // cu_seqlens run vs separate runs (needs seqlens)
double split_run_error(const Case& c);         // [0,T1) then [T1,T) via the state vs one run (causal ops)

// A fast form against the oracle on the same inputs stored as `dtype` (the oracle reads them
// widened to fp64): relative error of o and final_state, and the largest relative error over
// the gradients of every input for random upstream gradients.
double form_forward_error(const Case& c, DType dtype, Form form);
double form_backward_error(const Case& c, DType dtype, Form form);

// One row of `linattn check`.
struct Row {
  std::string op, form, dtype, shape, check;
  double error = 0, tolerance = 0;
  bool pass = false;
};

// One check of `linattn check`: run() measures it and turns it into a Row.
struct Job {
  std::string op, form, shape, check;
  double tolerance = 0;
  std::function<double()> measure;
};

// Ops with an API of their own (not an Op of ops.hpp: softmax attention, LLA, selective scan,
// conv1d) contribute their checks through this table, one entry per op name; each family's
// check file (src/ops/<family>/check.cpp) defines its jobs function and src/check/families.cpp
// lists it.
struct CheckFamily {
  const char* name;
  std::vector<Job> (*jobs)(DType dtype);
};
const std::vector<CheckFamily>& check_families();

// Every name `linattn check` takes: the ops of ops.hpp, then the families above.
std::vector<std::string> check_names();

// The built-in random cases for an op (small shapes, extreme gates, every flag, T = 1,
// lengths not divisible by 64, varlen with a length-1 sequence, one long sequence).
std::vector<Case> builtin_cases(Op op);

// Runs every check of every implemented form of the ops named (check_names()) with inputs
// stored as `dtype`. progress(done, total) is called after each row.
std::vector<Row> run(const std::vector<std::string>& names, DType dtype,
                     const std::function<void(size_t, size_t)>& progress = {});

}  // namespace linattn::check
