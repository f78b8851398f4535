// Helpers for the check files of ops with an API of their own (src/ops/<family>/check.cpp):
// random inputs, sequence offsets, the fp64 loss of a forward against fixed upstream weights,
// and central finite differences of such a loss.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "check/harness.hpp"
#include "linattn/error.hpp"

namespace linattn::check {

// A buffer of `dtype` with entries uniform in [lo, hi) (drawn in fp64, then rounded).
Buffer random_buffer(DType dtype, std::vector<int64_t> shape, std::mt19937_64& rng, double lo,
                     double hi);

// cu_seqlens (int64, [N+1]) of the given sequence lengths.
Buffer offsets_of(const std::vector<int64_t>& seqlens);

// Σ_i a[i] b[i] in fp64 (0 if either is not given).
double dot(const Buffer& a, const Buffer& b);

// One input of a forward checked by finite differences: the fp64 buffer the loss reads
// (perturbed in place) and the gradient the backward gave for it.
struct Differentiable {
  Buffer* input;
  const Buffer* grad;
};

// Central differences of loss() at `per_input` random elements of each input, against the
// gradients: the largest relative error over the inputs (an input with a tiny gradient next
// to the others is measured against 1e-3 of the largest, as harness.cpp's oracle check).
double finite_difference_error(const std::vector<Differentiable>& inputs,
                               const std::function<double()>& loss, std::mt19937_64& rng,
                               int per_input = 12);

// The consistency checks of a family's oracle, over its check types: Case (B, T, seqlens),
// Inputs, run(case, inputs) -> {y, final_state} through the oracle, and piece(inputs, b, start,
// len, state): the inputs of tokens [start, start + len) of row b with `state` as initial state.
// cu_seqlens run vs one run per sequence (each with its initial-state row).
template <class Case, class Inputs, class Run, class Piece>
double varlen_error(const Case& c, const Inputs& in, Run run, Piece piece) {
  const auto full = run(c, in);
  double worst = 0;
  int64_t start = 0;
  for (size_t n = 0; n < c.seqlens.size(); ++n) {
    Case one = c;
    one.seqlens.clear();
    one.T = c.seqlens[n];
    const auto out = run(one, piece(in, 0, start, one.T, slice_row(in.initial_state, n)));
    worst = std::max({worst, rel_error(out.y, slice_tokens(full.y, 0, start, one.T, 1)),
                      rel_error(out.final_state, slice_row(full.final_state, n))});
    start += one.T;
  }
  return worst;
}

// Tokens [0, T/2) then [T/2, T) of each row, the second from the first's final state, vs one run.
template <class Case, class Inputs, class Run, class Piece>
double split_run_error(const Case& c, const Inputs& in, Run run, Piece piece) {
  const auto full = run(c, in);
  double worst = 0;
  for (int64_t b = 0; b < c.B; ++b) {
    Case part = c;
    part.B = 1;
    part.initial_state = true;
    const int64_t T1 = part.T = c.T / 2;
    const auto first = run(part, piece(in, b, 0, T1, slice_row(in.initial_state, b)));
    part.T = c.T - T1;
    const auto second = run(part, piece(in, b, T1, part.T, first.final_state));
    worst = std::max({worst, rel_error(first.y, slice_tokens(full.y, b, 0, T1, 1)),
                      rel_error(second.y, slice_tokens(full.y, b, T1, part.T, 1)),
                      rel_error(second.final_state, slice_row(full.final_state, b))});
  }
  return worst;
}

// The message of the linattn::Error that f() throws, or "" if it throws none.
template <typename F>
std::string error_message(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// The checks of a family (its check.cpp), for its `linattn check` rows.
template <class Case>
struct FamilyChecks {
  double (*finite_differences)(const Case&);     // fp64 oracle backward vs central differences
  double (*varlen)(const Case&);                 // cases with seqlens
  double (*split_run)(const Case&);              // fixed-length cases, T >= 2
  double (*decode)(const Case&, DType);          // decode steps vs the oracle's forward
  double (*fast_forward)(const Case&, DType);    // fast form vs the oracle
  double (*fast_backward)(const Case&, DType);
};

// The rows of a family with inputs stored as `dtype`: in fp64 the oracle's own checks, else the
// fast form against the oracle; decode steps in every dtype. Tolerances as harness.cpp: fp64
// recurrences agree to ~1e-13 (1e-12), central differences carry ~1e-9 (1e-6), fp32 storage
// and arithmetic 1e-5, bf16 storage 1e-2.
template <class Case>
std::vector<Job> family_jobs(const std::string& name, DType dtype, const std::vector<Case>& cases,
                             const FamilyChecks<Case>& f) {
  const double tol = dtype == DType::bf16 ? 1e-2 : dtype == DType::f32 ? 1e-5 : 1e-12;
  std::vector<Job> out;
  for (const Case& c : cases) {
    const std::string shape = c.describe();
    if (dtype == DType::f64) {
      if (c.T * c.D <= 400)  // small enough for two forwards per sampled element
        out.push_back({name, "reference", shape, "bwd vs finite differences", 1e-6, [c, f] { return f.finite_differences(c); }});
      if (!c.seqlens.empty())
        out.push_back({name, "reference", shape, "varlen = separate runs", 1e-12, [c, f] { return f.varlen(c); }});
      else if (c.T >= 2)
        out.push_back({name, "reference", shape, "split run = one run", 1e-12, [c, f] { return f.split_run(c); }});
    } else {
      out.push_back({name, "chunk", shape, "fwd vs reference", tol, [c, dtype, f] { return f.fast_forward(c, dtype); }});
      out.push_back({name, "chunk", shape, "bwd vs reference", tol, [c, dtype, f] { return f.fast_backward(c, dtype); }});
    }
    if (c.seqlens.empty())
      out.push_back({name, "recurrent", shape, "decode steps = forward", tol, [c, dtype, f] { return f.decode(c, dtype); }});
  }
  return out;
}

}  // namespace linattn::check
