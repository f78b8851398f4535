// fp64 oracle of softmax attention, query by query (algorithms.md §4.11 a):
//   s_j = scale q_i . k_j for j in [first_key(i), i],  m = max_j s_j,  l = sum_j e^{s_j - m},
//   P_j = e^{s_j - m} / l,  o_i = sum_j P_j v_j,  lse_i = m + log l.
// Hand-written reverse mode, per query:
//   dP_j = do_i . v_j,  D_i = sum_j P_j dP_j,  dS_j = P_j (dP_j - D_i),
//   dq_i = scale sum_j dS_j k_j,  dk_j += scale dS_j q_i,  dv_j += P_j do_i.
// Everything in double whatever the storage dtype and strides. Work items are (span, kv head):
// the item owns o, lse, dq of its query heads and dk, dv of its kv head, so the result does not
// depend on the thread count.
#include <cmath>
#include <vector>

#include "core/parallel.hpp"
#include "ops/attention/attention.hpp"
#include "ops/common/rows.hpp"

namespace linattn::attention {
namespace {

// One query's normalised probabilities over keys [lo, pos] (index j - lo) and its lse.
double probabilities(const Problem& p, const double* q, const double* k, int64_t lo, int64_t pos,
                     std::vector<double>& P) {
  const int64_t K = p.K, n = pos - lo + 1;
  P.assign(n, 0.0);
  double m = -INFINITY;
  for (int64_t j = 0; j < n; ++j) {
    double s = 0;
    for (int64_t d = 0; d < K; ++d) s += q[d] * k[(lo + j) * K + d];
    P[j] = p.scale * s;
    m = std::max(m, P[j]);
  }
  double l = 0;
  for (int64_t j = 0; j < n; ++j) l += (P[j] = std::exp(P[j] - m));
  for (int64_t j = 0; j < n; ++j) P[j] /= l;
  return m + std::log(l);
}

// Runs body(span, hkv, q, k, v) on every (span, kv head) with k, v the span's key rows of hkv.
template <typename Body>
void for_each_item(const Problem& p, const TensorView& k, const TensorView& v, Body&& body) {
  const int64_t n_items = static_cast<int64_t>(p.spans.size()) * p.Hkv;
  parallel_for(n_items, [&](int64_t item) {
    const Span& s = p.spans[item / p.Hkv];
    const int64_t hkv = item % p.Hkv, n = s.kv_len();
    std::vector<double> kr(n * p.K), vr(n * p.V);
    load_rows_f64(k, s.kb, s.kv0, n, hkv, kr.data());
    load_rows_f64(v, s.kb, s.kv0, n, hkv, vr.data());
    body(s, hkv, kr, vr);
  });
}

}  // namespace

void reference_forward(const Problem& p, const TensorView& q, const TensorView& k,
                       const TensorView& v, const TensorView& o, const TensorView& lse) {
  const int64_t K = p.K, V = p.V;
  for_each_item(p, k, v, [&](const Span& s, int64_t hkv, const std::vector<double>& kr,
                             const std::vector<double>& vr) {
    std::vector<double> qr(s.rows * K), orows(s.rows * V), P;
    for (int64_t h = hkv * p.group(); h < (hkv + 1) * p.group(); ++h) {
      load_rows_f64(q, s.qb, s.q0, s.rows, h, qr.data());
      for (int64_t r = 0; r < s.rows; ++r) {
        const int64_t pos = s.pos0 + r, lo = p.first_key(pos);
        const double log_sum = probabilities(p, &qr[r * K], kr.data(), lo, pos, P);
        double* out = &orows[r * V];
        std::fill(out, out + V, 0.0);
        for (int64_t j = lo; j <= pos; ++j)
          for (int64_t c = 0; c < V; ++c) out[c] += P[j - lo] * vr[j * V + c];
        if (lse.given()) store_scalar(lse, s.qb, s.q0 + r, h, log_sum);
      }
      store_rows_f64(o, s.qb, s.q0, s.rows, h, orows.data());
    }
  });
}

void reference_backward(const Problem& p, const TensorView& q, const TensorView& k,
                        const TensorView& v, const TensorView& d_o, const TensorView& dq,
                        const TensorView& dk, const TensorView& dv) {
  const int64_t K = p.K, V = p.V;
  for_each_item(p, k, v, [&](const Span& s, int64_t hkv, const std::vector<double>& kr,
                             const std::vector<double>& vr) {
    const int64_t n = s.kv_len();
    std::vector<double> qr(s.rows * K), dor(s.rows * V), dqr(s.rows * K), P, dP;
    std::vector<double> dkr(n * K, 0.0), dvr(n * V, 0.0);
    for (int64_t h = hkv * p.group(); h < (hkv + 1) * p.group(); ++h) {
      load_rows_f64(q, s.qb, s.q0, s.rows, h, qr.data());
      load_rows_f64(d_o, s.qb, s.q0, s.rows, h, dor.data());
      std::fill(dqr.begin(), dqr.end(), 0.0);
      for (int64_t r = 0; r < s.rows; ++r) {
        const int64_t pos = s.pos0 + r, lo = p.first_key(pos);
        const double* qi = &qr[r * K];
        const double* doi = &dor[r * V];
        probabilities(p, qi, kr.data(), lo, pos, P);
        dP.assign(P.size(), 0.0);
        double D = 0;
        for (int64_t j = lo; j <= pos; ++j) {
          for (int64_t c = 0; c < V; ++c) dP[j - lo] += doi[c] * vr[j * V + c];
          D += P[j - lo] * dP[j - lo];
        }
        for (int64_t j = lo; j <= pos; ++j) {
          const double pj = P[j - lo], dS = pj * (dP[j - lo] - D);
          for (int64_t d = 0; d < K; ++d) {
            dqr[r * K + d] += p.scale * dS * kr[j * K + d];
            dkr[j * K + d] += p.scale * dS * qi[d];
          }
          for (int64_t c = 0; c < V; ++c) dvr[j * V + c] += pj * doi[c];
        }
      }
      if (dq.given()) store_rows_f64(dq, s.qb, s.q0, s.rows, h, dqr.data());
    }
    if (dk.given()) store_rows_f64(dk, s.kb, s.kv0, n, hkv, dkr.data());
    if (dv.given()) store_rows_f64(dv, s.kb, s.kv0, n, hkv, dvr.data());
  });
}

}  // namespace linattn::attention
