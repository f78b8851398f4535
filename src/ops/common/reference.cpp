// fp64 token-by-token oracle for every matrix-state recurrence of the gated (Hebbian) and delta
// families, forward and hand-written reverse mode. One engine serves both families because they
// differ only in the write: Hebbian S += k v^T (algorithms.md §4.1-4.4), delta
// S += k [beta (v - S^T k)]^T (§4.5-4.7), with n_h writes per token for DeltaProduct (§4.7a),
// and for dplr_delta_rule (§4.8a) the Hebbian write plus b sa^T with sa = S_{t-1}^T a read from
// the state before the token's decay.
// Per token: decay (scalar exp(g) or per-key-channel exp(gk)), then the writes, then the read
// o = scale S^T q (/ scale q.z + eps when normalize). Everything runs in double whatever the
// storage dtype; work items are (sequence, q/k head) so dq and dk of a head group are owned
// by one item and the result does not depend on the thread count.
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/dtype.hpp"
#include "core/parallel.hpp"
#include "ops/common/forms.hpp"

namespace linattn {
namespace {

constexpr double kL2NormEps = 1e-6;      // fla's l2norm: x / sqrt(sum x^2 + eps)
constexpr double kNormalizeEps = 1e-10;  // fla's normalize_output: o / (q.cumsum(k) + eps)
constexpr int64_t kCheckpointEvery = 64; // backward replays states from checkpoints (§4.8c)

double read(const TensorView& t, int64_t i0, int64_t i1, int64_t i2, int64_t i3 = 0) {
  const int64_t offset = i0 * t.strides[0] + i1 * t.strides[1] + i2 * t.strides[2] +
                         (t.ndim > 3 ? i3 * t.strides[3] : 0);
  return load_as_double(t.data, t.dtype, offset);
}

void write(const TensorView& t, double value, int64_t i0, int64_t i1, int64_t i2,
           int64_t i3 = 0) {
  const int64_t offset = i0 * t.strides[0] + i1 * t.strides[1] + i2 * t.strides[2] +
                         (t.ndim > 3 ? i3 * t.strides[3] : 0);
  store_from_double(t.data, t.dtype, offset, value);
}

// Rows of a [B, T', H, D] view for one sequence and head, as a dense [len, D] fp64 block,
// L2-normalised when asked (rstd keeps 1/sqrt(|x|^2 + eps) per row for the backward).
void load_rows(const TensorView& t, const Sequence& s, int64_t steps, int64_t head, bool l2norm,
               std::vector<double>& rows, std::vector<double>& rstd) {
  const int64_t len = s.length * steps, D = t.shape[3];
  rows.resize(len * D);
  rstd.assign(len, 1.0);
  for (int64_t r = 0; r < len; ++r) {
    double* row = &rows[r * D];
    double sq = 0;
    for (int64_t d = 0; d < D; ++d) {
      row[d] = read(t, s.batch, s.start * steps + r, head, d);
      sq += row[d] * row[d];
    }
    if (l2norm) {
      rstd[r] = 1.0 / std::sqrt(sq + kL2NormEps);
      for (int64_t d = 0; d < D; ++d) row[d] *= rstd[r];
    }
  }
}

// One (sequence, value head) recurrence, inputs widened to fp64.
struct Head {
  Head(const Problem& problem, const double* q_rows, const double* k_rows)
      : p(problem), q(q_rows), k(k_rows) {}
  const Problem& p;
  const double* q;  // [len, K], normalised if use_qk_l2norm_in_kernel
  const double* k;  // [len * n_h, K]
  const double* a = nullptr;  // dplr_delta_rule: [len, K] low-rank transition a_t (else null)
  const double* b = nullptr;  // [len, K]
  std::vector<double> v, beta, g, gk, z;  // [len*n_h, V], [len*n_h], [len], [len, K], [len, K]
  bool has_g = false, has_gk = false, normalize = false;
};

// The state before, and the quantities of, each of a token's n_h writes (for the backward).
struct WriteTrace {
  std::vector<double> pre;  // [n_h, K, V] state before write j (pre[0] = the decayed state)
  std::vector<double> err;  // [n_h, V]    v - S^T k (delta only)
  std::vector<double> u;    // [n_h, V]    the value written along k
  std::vector<double> sa;   // [V]         dplr: S_{t-1}^T a_t
};

// Applies token t's transition to S (K x V, row-major): decay, then n_h writes.
void transition(const Head& h, int64_t t, double* S, WriteTrace* trace) {
  const int64_t K = h.p.K, V = h.p.V, n_h = h.p.n_h;
  std::vector<double> sa(h.a ? V : 0, 0.0);  // dplr: read with the undecayed state (§4.8a)
  for (int64_t r = 0; r < (h.a ? K : 0); ++r)
    for (int64_t c = 0; c < V; ++c) sa[c] += S[r * V + c] * h.a[t * K + r];
  if (h.has_g) {
    const double a = std::exp(h.g[t]);
    for (int64_t i = 0; i < K * V; ++i) S[i] *= a;
  }
  if (h.has_gk) {
    for (int64_t c = 0; c < K; ++c) {
      const double a = std::exp(h.gk[t * K + c]);
      for (int64_t j = 0; j < V; ++j) S[c * V + j] *= a;
    }
  }
  std::vector<double> u(V), err(V);
  for (int64_t j = 0; j < n_h; ++j) {
    const int64_t idx = t * n_h + j;
    const double* kk = h.k + idx * K;
    const double* vv = &h.v[idx * V];
    if (trace) std::copy(S, S + K * V, trace->pre.begin() + j * K * V);
    if (h.p.delta) {
      for (int64_t c = 0; c < V; ++c) err[c] = vv[c];
      for (int64_t r = 0; r < K; ++r)
        for (int64_t c = 0; c < V; ++c) err[c] -= S[r * V + c] * kk[r];
      for (int64_t c = 0; c < V; ++c) u[c] = h.beta[idx] * err[c];
    } else {
      std::copy(vv, vv + V, u.begin());
    }
    for (int64_t r = 0; r < K; ++r)
      for (int64_t c = 0; c < V; ++c) S[r * V + c] += kk[r] * u[c];
    if (trace) {
      std::copy(u.begin(), u.end(), trace->u.begin() + j * V);
      std::copy(err.begin(), err.end(), trace->err.begin() + j * V);
    }
  }
  if (!h.a) return;
  for (int64_t r = 0; r < K; ++r)
    for (int64_t c = 0; c < V; ++c) S[r * V + c] += h.b[t * K + r] * sa[c];
  if (trace) trace->sa = sa;
}

// o = scale S^T q_t, divided by scale q_t.z_t + eps when normalising; returns the denominator.
double readout(const Head& h, int64_t t, const double* S, double* o) {
  const int64_t K = h.p.K, V = h.p.V;
  const double* qt = h.q + t * K;
  std::fill(o, o + V, 0.0);
  for (int64_t r = 0; r < K; ++r)
    for (int64_t c = 0; c < V; ++c) o[c] += S[r * V + c] * qt[r];
  for (int64_t c = 0; c < V; ++c) o[c] *= h.p.scale;
  if (!h.normalize) return 1.0;
  double den = kNormalizeEps;
  for (int64_t r = 0; r < K; ++r) den += h.p.scale * qt[r] * h.z[t * K + r];
  for (int64_t c = 0; c < V; ++c) o[c] /= den;
  return den;
}

void load_head(Head& h, const OpArgs& a, const Sequence& s, int64_t hv) {
  const Problem& p = h.p;
  const int64_t steps = s.length * p.n_h;
  h.v.resize(steps * p.V);
  for (int64_t r = 0; r < steps; ++r)
    for (int64_t c = 0; c < p.V; ++c)
      h.v[r * p.V + c] = read(a.v, s.batch, s.start * p.n_h + r, hv, c);
  if (a.beta.given()) {
    h.beta.resize(steps);
    for (int64_t r = 0; r < steps; ++r) h.beta[r] = read(a.beta, s.batch, s.start * p.n_h + r, hv);
  }
  h.has_g = a.g.given() || p.spec->fixed_decay;
  if (a.g.given()) {
    h.g.resize(s.length);
    for (int64_t t = 0; t < s.length; ++t) h.g[t] = read(a.g, s.batch, s.start + t, hv);
  } else if (p.spec->fixed_decay) {
    h.g.assign(s.length, retention_log_decay(hv));
  }
  h.has_gk = a.gk.given();
  if (h.has_gk) {
    h.gk.resize(s.length * p.K);
    for (int64_t t = 0; t < s.length; ++t)
      for (int64_t c = 0; c < p.K; ++c) h.gk[t * p.K + c] = read(a.gk, s.batch, s.start + t, hv, c);
  }
}

void load_state(const TensorView& state, int64_t n, int64_t hv, int64_t size, double* S) {
  if (!state.given()) {
    std::fill(S, S + size, 0.0);
    return;
  }
  const int64_t V = state.shape[3];
  for (int64_t i = 0; i < size; ++i) S[i] = read(state, n, hv, i / V, i % V);
}

void store_state(const TensorView& state, int64_t n, int64_t hv, const double* S) {
  const int64_t K = state.shape[2], V = state.shape[3];
  for (int64_t i = 0; i < K * V; ++i) write(state, S[i], n, hv, i / V, i % V);
}

// The q/k rows of one (sequence, q/k head), shared by the group of value heads that read them.
struct GroupInputs {
  std::vector<double> q, k, q_rstd, k_rstd, z, a_rows, b_rows, ab_rstd;  // a, b: dplr only
  GroupInputs(const Problem& p, const OpArgs& a, const Sequence& s, int64_t hq) {
    load_rows(a.q, s, 1, hq, a.use_qk_l2norm_in_kernel, q, q_rstd);
    load_rows(a.k, s, p.n_h, hq, a.use_qk_l2norm_in_kernel, k, k_rstd);
    if (p.spec->takes_ab) {
      load_rows(a.a, s, 1, hq, false, a_rows, ab_rstd);
      load_rows(a.b, s, 1, hq, false, b_rows, ab_rstd);
    }
    if (a.normalize) {  // running key sum of this sequence (fla normalises without the state)
      z.assign(s.length * p.K, 0.0);
      for (int64_t t = 0; t < s.length; ++t)
        for (int64_t c = 0; c < p.K; ++c)
          z[t * p.K + c] = (t ? z[(t - 1) * p.K + c] : 0.0) + k[t * p.K + c];
    }
  }
  Head head(const Problem& p, const OpArgs& a) const {
    Head h(p, q.data(), k.data());
    if (p.spec->takes_ab) {
      h.a = a_rows.data();
      h.b = b_rows.data();
    }
    h.normalize = a.normalize;
    h.z = z;
    return h;
  }
};

// dx = rstd * (dy - y (y.dy)) for y = x * rstd: the backward of the in-kernel L2 norm.
void l2norm_backward(const double* y, double rstd, int64_t D, double* dy) {
  double dot = 0;
  for (int64_t d = 0; d < D; ++d) dot += y[d] * dy[d];
  for (int64_t d = 0; d < D; ++d) dy[d] = rstd * (dy[d] - y[d] * dot);
}

}  // namespace

void reference_forward(const Problem& p, const OpArgs& a, const OpOutputs& out) {
  const int64_t G = p.group();
  parallel_for(p.N() * p.H, [&](int64_t item) {
    const int64_t n = item / p.H, hq = item % p.H;
    const Sequence& s = p.sequences[n];
    const GroupInputs in(p, a, s, hq);
    std::vector<double> S(p.K * p.V), o(p.V);
    for (int64_t hv = hq * G; hv < (hq + 1) * G; ++hv) {
      Head h = in.head(p, a);
      load_head(h, a, s, hv);
      load_state(a.initial_state, n, hv, p.K * p.V, S.data());
      for (int64_t t = 0; t < s.length; ++t) {
        transition(h, t, S.data(), nullptr);
        readout(h, t, S.data(), o.data());
        for (int64_t c = 0; c < p.V; ++c) write(out.o, o[c], s.batch, s.start + t, hv, c);
      }
      if (a.output_final_state) store_state(out.final_state, n, hv, S.data());
    }
  });
}

void reference_backward(const Problem& p, const OpArgs& a, const OpGradOutputs& go,
                        const OpGrads& gr) {
  const int64_t G = p.group(), K = p.K, V = p.V, KV = K * V, n_h = p.n_h;
  parallel_for(p.N() * p.H, [&](int64_t item) {
    const int64_t n = item / p.H, hq = item % p.H;
    const Sequence& s = p.sequences[n];
    const int64_t len = s.length;
    const GroupInputs in(p, a, s, hq);
    std::vector<double> dq(len * K, 0.0), dk(len * n_h * K, 0.0);
    std::vector<double> da(in.a_rows.size(), 0.0), db(in.b_rows.size(), 0.0), dsa(V);
    std::vector<double> dS(KV), num(V), dnum(V), du(V), dpred(V), dz_run(K);
    WriteTrace trace{std::vector<double>(n_h * KV), std::vector<double>(n_h * V),
                     std::vector<double>(n_h * V)};
    const int64_t n_segments = (len + kCheckpointEvery - 1) / kCheckpointEvery;
    std::vector<double> checkpoints(n_segments * KV), states((kCheckpointEvery + 1) * KV);

    for (int64_t hv = hq * G; hv < (hq + 1) * G; ++hv) {
      Head h = in.head(p, a);
      load_head(h, a, s, hv);
      std::vector<double> dv(len * n_h * V, 0.0), dbeta(h.beta.size(), 0.0);
      std::vector<double> dg(h.g.size(), 0.0), dgk(h.gk.size(), 0.0);

      // Forward sweep keeping the state before every kCheckpointEvery-th token.
      load_state(a.initial_state, n, hv, KV, states.data());
      for (int64_t t = 0; t < len; ++t) {
        if (t % kCheckpointEvery == 0)
          std::copy(states.begin(), states.begin() + KV, checkpoints.begin() + (t / kCheckpointEvery) * KV);
        transition(h, t, states.data(), nullptr);
      }

      if (go.dfinal_state.given()) {
        load_state(go.dfinal_state, n, hv, KV, dS.data());
      } else {
        std::fill(dS.begin(), dS.end(), 0.0);
      }
      std::fill(dz_run.begin(), dz_run.end(), 0.0);

      for (int64_t seg = n_segments - 1; seg >= 0; --seg) {
        const int64_t t0 = seg * kCheckpointEvery, t1 = std::min(len, t0 + kCheckpointEvery);
        std::copy(checkpoints.begin() + seg * KV, checkpoints.begin() + (seg + 1) * KV, states.begin());
        for (int64_t t = t0; t < t1; ++t) {
          std::copy(states.begin() + (t - t0) * KV, states.begin() + (t - t0 + 1) * KV,
                    states.begin() + (t - t0 + 1) * KV);
          transition(h, t, &states[(t - t0 + 1) * KV], nullptr);
        }
        for (int64_t t = t1 - 1; t >= t0; --t) {
          const double* S_t = &states[(t - t0 + 1) * KV];
          const double* qt = h.q + t * K;
          // Read: o = num / den.
          const double den = readout(h, t, S_t, num.data());
          double o_dot_do = 0;
          for (int64_t c = 0; c < V; ++c) {
            const double d = read(go.d_o, s.batch, s.start + t, hv, c);
            dnum[c] = d / den;
            o_dot_do += d * num[c];  // num holds o here (already divided)
          }
          if (h.normalize) {
            const double dden = -o_dot_do / den;
            for (int64_t r = 0; r < K; ++r) {
              dq[t * K + r] += p.scale * h.z[t * K + r] * dden;
              dz_run[r] += p.scale * qt[r] * dden;
              dk[t * K + r] += dz_run[r];
            }
          }
          for (int64_t r = 0; r < K; ++r) {
            double acc = 0;
            for (int64_t c = 0; c < V; ++c) acc += S_t[r * V + c] * dnum[c];
            dq[t * K + r] += p.scale * acc;
            for (int64_t c = 0; c < V; ++c) dS[r * V + c] += p.scale * qt[r] * dnum[c];
          }
          // Writes, last to first, replayed from the state before the token.
          std::vector<double> replay(states.begin() + (t - t0) * KV, states.begin() + (t - t0 + 1) * KV);
          transition(h, t, replay.data(), &trace);
          for (int64_t j = n_h - 1; j >= 0; --j) {
            const int64_t idx = t * n_h + j;
            const double* kk = h.k + idx * K;
            const double* u = &trace.u[j * V];
            const double* pre = &trace.pre[j * KV];
            for (int64_t c = 0; c < V; ++c) du[c] = 0;
            for (int64_t r = 0; r < K; ++r) {
              double acc = 0;
              for (int64_t c = 0; c < V; ++c) {
                acc += dS[r * V + c] * u[c];
                du[c] += dS[r * V + c] * kk[r];
              }
              dk[idx * K + r] += acc;
            }
            if (!p.delta) {
              for (int64_t c = 0; c < V; ++c) dv[idx * V + c] += du[c];
              continue;
            }
            // u = beta (v - pre^T k)
            const double* err = &trace.err[j * V];
            double db = 0;
            for (int64_t c = 0; c < V; ++c) {
              db += du[c] * err[c];
              const double derr = h.beta[idx] * du[c];
              dv[idx * V + c] += derr;
              dpred[c] = -derr;
            }
            dbeta[idx] += db;
            for (int64_t r = 0; r < K; ++r) {
              double acc = 0;
              for (int64_t c = 0; c < V; ++c) {
                acc += pre[r * V + c] * dpred[c];
                dS[r * V + c] += kk[r] * dpred[c];
              }
              dk[idx * K + r] += acc;
            }
          }
          // dplr: S += b sa^T gives db = dS sa, dsa = dS^T b (dS is still dS_t here).
          if (h.a) {
            std::fill(dsa.begin(), dsa.end(), 0.0);
            for (int64_t r = 0; r < K; ++r) {
              double acc = 0;
              for (int64_t c = 0; c < V; ++c) {
                acc += dS[r * V + c] * trace.sa[c];
                dsa[c] += dS[r * V + c] * h.b[t * K + r];
              }
              db[t * K + r] += acc;
            }
          }
          // Decay: S_dec = a * S_prev, and trace.pre[0] is S_dec.
          const double* S_dec = trace.pre.data();
          if (h.has_g) {
            double acc = 0;
            for (int64_t i = 0; i < KV; ++i) acc += dS[i] * S_dec[i];
            dg[t] += acc;
            const double decay = std::exp(h.g[t]);
            for (int64_t i = 0; i < KV; ++i) dS[i] *= decay;
          }
          if (h.has_gk) {
            for (int64_t r = 0; r < K; ++r) {
              double acc = 0;
              for (int64_t c = 0; c < V; ++c) acc += dS[r * V + c] * S_dec[r * V + c];
              dgk[t * K + r] += acc;
              const double decay = std::exp(h.gk[t * K + r]);
              for (int64_t c = 0; c < V; ++c) dS[r * V + c] *= decay;
            }
          }
          // dplr: sa = S_prev^T a gives da = S_prev dsa and dS_prev += a dsa^T.
          if (h.a) {
            const double* S_prev = &states[(t - t0) * KV];
            for (int64_t r = 0; r < K; ++r) {
              double acc = 0;
              for (int64_t c = 0; c < V; ++c) {
                acc += S_prev[r * V + c] * dsa[c];
                dS[r * V + c] += h.a[t * K + r] * dsa[c];
              }
              da[t * K + r] += acc;
            }
          }
        }
      }

      // Per-value-head gradients are owned by this item.
      for (int64_t r = 0; r < len * n_h; ++r) {
        if (gr.dv.given())
          for (int64_t c = 0; c < V; ++c) write(gr.dv, dv[r * V + c], s.batch, s.start * n_h + r, hv, c);
        if (gr.dbeta.given()) write(gr.dbeta, dbeta[r], s.batch, s.start * n_h + r, hv);
      }
      for (int64_t t = 0; t < len; ++t) {
        if (gr.dg.given()) write(gr.dg, dg[t], s.batch, s.start + t, hv);
        if (gr.dgk.given())
          for (int64_t c = 0; c < K; ++c) write(gr.dgk, dgk[t * K + c], s.batch, s.start + t, hv, c);
      }
      if (gr.dinitial_state.given()) store_state(gr.dinitial_state, n, hv, dS.data());
    }

    // q/k gradients of the group, through the in-kernel L2 norm when it was applied.
    if (a.use_qk_l2norm_in_kernel) {
      for (int64_t t = 0; t < len; ++t) l2norm_backward(&in.q[t * K], in.q_rstd[t], K, &dq[t * K]);
      for (int64_t r = 0; r < len * n_h; ++r)
        l2norm_backward(&in.k[r * K], in.k_rstd[r], K, &dk[r * K]);
    }
    for (int64_t t = 0; t < len && gr.dq.given(); ++t)
      for (int64_t c = 0; c < K; ++c) write(gr.dq, dq[t * K + c], s.batch, s.start + t, hq, c);
    for (int64_t r = 0; r < len * n_h && gr.dk.given(); ++r)
      for (int64_t c = 0; c < K; ++c) write(gr.dk, dk[r * K + c], s.batch, s.start * n_h + r, hq, c);
    for (int64_t t = 0; t < len && gr.da.given(); ++t)
      for (int64_t c = 0; c < K; ++c) write(gr.da, da[t * K + c], s.batch, s.start + t, hq, c);
    for (int64_t t = 0; t < len && gr.db.given(); ++t)
      for (int64_t c = 0; c < K; ++c) write(gr.db, db[t * K + c], s.batch, s.start + t, hq, c);
  });
}

}  // namespace linattn
