// fp64 oracle of noncausal_linear_attn: bidirectional linear attention, algorithms.md §4.1 with
// no causal mask. Per sequence and value head, over every token s of the sequence,
//   KV = sum_s k_s v_s^T,  z = sum_s k_s,  o_t = num_t / den_t,  num_t = scale KV^T q_t,
//   den_t = scale q_t . z + 1e-10 when normalize (linear_attn's eps), else 1.
// Hand-written reverse mode:
//   dnum_t = do_t / den_t,  dden_t = -(do_t . num_t) / den_t^2,
//   dq_t = scale (KV dnum_t + z dden_t),  dKV = scale sum_t q_t dnum_t^T,  dz = scale sum_t q_t dden_t,
//   dk_s = dKV v_s + dz,  dv_s = dKV^T k_s.
// Everything runs in double whatever the storage dtype and strides; work items are (sequence,
// q/k head) so that dq and dk of a head group are owned by one item and the result does not
// depend on the thread count.
#include <vector>

#include "core/dtype.hpp"
#include "core/parallel.hpp"
#include "ops/common/forms.hpp"
#include "ops/common/rows.hpp"

namespace linattn {
namespace {

constexpr double kNormalizeEps = 1e-10;

// Element [s.batch, s.start + r, head, d] of a rank-4 view.
int64_t offset(const TensorView& t, const Sequence& s, int64_t r, int64_t head, int64_t d) {
  return row_offset(t, s.batch, s.start + r, head) + d * t.strides[3];
}

// The sequence's rows of one head as a dense [length, D] block.
std::vector<double> load_rows64(const TensorView& t, const Sequence& s, int64_t head) {
  const int64_t D = t.shape[3];
  std::vector<double> rows(s.length * D);
  for (int64_t r = 0; r < s.length; ++r)
    for (int64_t d = 0; d < D; ++d) rows[r * D + d] = load_as_double(t.data, t.dtype, offset(t, s, r, head, d));
  return rows;
}

void store_rows64(const TensorView& t, const Sequence& s, int64_t head, const std::vector<double>& rows) {
  const int64_t D = t.shape[3];
  for (int64_t r = 0; r < s.length; ++r)
    for (int64_t d = 0; d < D; ++d) store_from_double(t.data, t.dtype, offset(t, s, r, head, d), rows[r * D + d]);
}

// One (sequence, value head): its values, KV, z and every token's num and den.
struct Head {
  std::vector<double> v, kv, z, num, den;
  Head(const Problem& p, const OpArgs& a, const Sequence& s, int64_t hv,
       const std::vector<double>& q, const std::vector<double>& k)
      : v(load_rows64(a.v, s, hv)), kv(p.K * p.V, 0.0), z(p.K, 0.0), num(s.length * p.V, 0.0),
        den(s.length, 1.0) {
    const int64_t K = p.K, V = p.V;
    for (int64_t t = 0; t < s.length; ++t)
      for (int64_t r = 0; r < K; ++r) {
        z[r] += k[t * K + r];
        for (int64_t c = 0; c < V; ++c) kv[r * V + c] += k[t * K + r] * v[t * V + c];
      }
    for (int64_t t = 0; t < s.length; ++t) {
      for (int64_t r = 0; r < K; ++r)
        for (int64_t c = 0; c < V; ++c) num[t * V + c] += p.scale * q[t * K + r] * kv[r * V + c];
      if (!a.normalize) continue;
      den[t] = kNormalizeEps;
      for (int64_t r = 0; r < K; ++r) den[t] += p.scale * q[t * K + r] * z[r];
    }
  }
};

}  // namespace

void noncausal_reference_forward(const Problem& p, const OpArgs& a, const OpOutputs& out) {
  parallel_for(p.N() * p.H, [&](int64_t item) {
    const Sequence& s = p.sequences[item / p.H];
    const int64_t hq = item % p.H;
    const std::vector<double> q = load_rows64(a.q, s, hq), k = load_rows64(a.k, s, hq);
    for (int64_t hv = hq * p.group(); hv < (hq + 1) * p.group(); ++hv) {
      Head h(p, a, s, hv, q, k);
      for (int64_t t = 0; t < s.length; ++t)
        for (int64_t c = 0; c < p.V; ++c) h.num[t * p.V + c] /= h.den[t];
      store_rows64(out.o, s, hv, h.num);
    }
  });
}

void noncausal_reference_backward(const Problem& p, const OpArgs& a, const OpGradOutputs& go,
                                  const OpGrads& gr) {
  const int64_t K = p.K, V = p.V;
  parallel_for(p.N() * p.H, [&](int64_t item) {
    const Sequence& s = p.sequences[item / p.H];
    const int64_t hq = item % p.H, len = s.length;
    const std::vector<double> q = load_rows64(a.q, s, hq), k = load_rows64(a.k, s, hq);
    std::vector<double> dq(len * K, 0.0), dk(len * K, 0.0), dv(len * V);
    for (int64_t hv = hq * p.group(); hv < (hq + 1) * p.group(); ++hv) {
      const Head h(p, a, s, hv, q, k);
      std::vector<double> dnum = load_rows64(go.d_o, s, hv), dkv(K * V, 0.0), dz(K, 0.0);
      for (int64_t t = 0; t < len; ++t) {
        double dden = 0;  // stays 0 without normalize: den is then the constant 1
        for (int64_t c = 0; c < V; ++c) {
          if (a.normalize) dden -= dnum[t * V + c] * h.num[t * V + c] / (h.den[t] * h.den[t]);
          dnum[t * V + c] /= h.den[t];
        }
        for (int64_t r = 0; r < K; ++r) {
          double acc = h.z[r] * dden;
          for (int64_t c = 0; c < V; ++c) {
            acc += h.kv[r * V + c] * dnum[t * V + c];
            dkv[r * V + c] += p.scale * q[t * K + r] * dnum[t * V + c];
          }
          dq[t * K + r] += p.scale * acc;
          dz[r] += p.scale * q[t * K + r] * dden;
        }
      }
      for (int64_t t = 0; t < len; ++t) {
        for (int64_t c = 0; c < V; ++c) dv[t * V + c] = 0;
        for (int64_t r = 0; r < K; ++r) {
          double acc = dz[r];
          for (int64_t c = 0; c < V; ++c) {
            acc += dkv[r * V + c] * h.v[t * V + c];
            dv[t * V + c] += dkv[r * V + c] * k[t * K + r];
          }
          dk[t * K + r] += acc;
        }
      }
      if (gr.dv.given()) store_rows64(gr.dv, s, hv, dv);
    }
    if (gr.dq.given()) store_rows64(gr.dq, s, hq, dq);
    if (gr.dk.given()) store_rows64(gr.dk, s, hq, dk);
  });
}

}  // namespace linattn
