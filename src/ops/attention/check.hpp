// Cases and `linattn check` jobs of softmax attention (check.cpp), shared with the GoogleTest
// suite (tests/cpp/attention_test.cpp).
#pragma once

#include <cstdint>
#include <numeric>
#include <string>
#include <vector>

#include "check/harness.hpp"

namespace linattn::check {

struct AttnCase {
  int64_t B = 1, T_ = 1, H = 1, Hkv = 1, K = 8, V = 8;
  int64_t window = 0;            // 0: full causal
  std::vector<int64_t> seqlens;  // non-empty: one row split by cu_seqlens (B = 1, T = sum)
  double logit_std = 1.0;        // standard deviation of the scaled logits scale q.k
  uint64_t seed = 1;
  int64_t T() const { return seqlens.empty() ? T_ : std::accumulate(seqlens.begin(), seqlens.end(), int64_t{0}); }
  std::string describe() const;
};

// N = lens.size() sequences of lens[n] tokens (the cache lengths), the last Tq of them new.
struct DecodeCase {
  int64_t Tq = 1, H = 1, Hkv = 1, K = 8, V = 8;
  int64_t window = 0;
  std::vector<int64_t> lens;
  double logit_std = 1.0;
  uint64_t seed = 1;
  std::string describe() const;
};

// fp64 inputs of a case (convert to the storage dtype with Buffer::to).
struct AttnInputs {
  Buffer q, k, v, cu_seqlens;
  AttnInputs to(DType dtype) const;  // q, k, v converted (rounded), cu_seqlens kept
};
AttnInputs make_attn_inputs(const AttnCase& c);

// Forward outputs in the inputs' dtype (lse float32, float64 for float64 inputs), and gradients
// for an upstream gradient d_o (after a forward of the same form).
struct AttnForward {
  Buffer o, lse;
};
struct AttnGrads {
  Buffer dq, dk, dv;
};
AttnForward attn_forward(const AttnCase& c, const AttnInputs& in, Form form);
AttnGrads attn_backward(const AttnCase& c, const AttnInputs& in, Form form, const Buffer& d_o);

std::vector<AttnCase> attention_cases();
std::vector<DecodeCase> decode_cases();
std::vector<Job> attention_jobs(DType dtype);

}  // namespace linattn::check
