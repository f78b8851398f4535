// The implementations behind linattn::forward/backward: one entry per (op, form).
#pragma once

#include "ops/common/problem.hpp"

namespace linattn {

using ForwardFn = void (*)(const Problem&, const OpArgs&, const OpOutputs&);
using BackwardFn = void (*)(const Problem&, const OpArgs&, const OpGradOutputs&, const OpGrads&);

// fp64 token-by-token oracle shared by the gated (Hebbian) and delta families
// (src/ops/common/reference.cpp).
void reference_forward(const Problem& p, const OpArgs& args, const OpOutputs& out);
void reference_backward(const Problem& p, const OpArgs& args, const OpGradOutputs& grad_out,
                        const OpGrads& grads);

// Fast forms of the gated (Hebbian) family: linear_attn, retention, simple_gla, gla
// (src/ops/gla/). Inputs float32 or bfloat16; fp32 accumulation.
void gla_chunk_forward(const Problem& p, const OpArgs& args, const OpOutputs& out);
void gla_chunk_backward(const Problem& p, const OpArgs& args, const OpGradOutputs& grad_out,
                        const OpGrads& grads);
void gla_recurrent_forward(const Problem& p, const OpArgs& args, const OpOutputs& out);

// Fast forms of the delta family: delta_rule, gated_delta_rule, delta_product (src/ops/delta/).
void delta_chunk_forward(const Problem& p, const OpArgs& args, const OpOutputs& out);
void delta_chunk_backward(const Problem& p, const OpArgs& args, const OpGradOutputs& grad_out,
                          const OpGrads& grads);
void delta_recurrent_forward(const Problem& p, const OpArgs& args, const OpOutputs& out);

// Fast forms of dplr_delta_rule (src/ops/dplr/): float32 or bfloat16, fp32 accumulation.
void dplr_recurrent_forward(const Problem& p, const OpArgs& args, const OpOutputs& out);
void dplr_chunk_forward(const Problem& p, const OpArgs& args, const OpOutputs& out);
void dplr_chunk_backward(const Problem& p, const OpArgs& args, const OpGradOutputs& grad_out,
                         const OpGrads& grads);

// noncausal_linear_attn (src/ops/noncausal/): the fp64 oracle, and the fast form (KV = K^T V,
// O = Q KV; float32 or bfloat16, fp32 accumulation) registered as the chunk form.
void noncausal_reference_forward(const Problem& p, const OpArgs& args, const OpOutputs& out);
void noncausal_reference_backward(const Problem& p, const OpArgs& args,
                                  const OpGradOutputs& grad_out, const OpGrads& grads);
void noncausal_chunk_forward(const Problem& p, const OpArgs& args, const OpOutputs& out);
void noncausal_chunk_backward(const Problem& p, const OpArgs& args, const OpGradOutputs& grad_out,
                              const OpGrads& grads);

}  // namespace linattn
