// libFuzzer harness for the C API (linattn.h): the fuzz input is decoded into an op, a form, a
// pass, sizes, flags, the data of every tensor and up to three corruptions of the views (sizes,
// ranks, dtypes, strides, null or misaligned pointers, aliased outputs, overflowing sizes,
// missing or extra arguments, cu_seqlens offsets). Every buffer is allocated to cover the view
// handed over, so any out-of-bounds access, UB or crash is linattn's; beyond the sanitizers the
// harness traps on a status/message mismatch, an INTERNAL or OUT_OF_MEMORY status, and a NaN or
// Inf output from finite, valid inputs (the "no silent NaN" rule).
//
// Run: scripts/fuzz SECONDS (docs/reliability.md). Adding an op of linattn::Op needs nothing
// here (ops are enumerated through the C API and op_spec()); a family with an API of its own
// adds its calls to tests/support/families.hpp (the catalogue's table), which fuzz_families runs.
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "linattn/linattn.h"
#include "linattn/ops.hpp"
#include "support/families.hpp"
#include "support/view_memory.hpp"

namespace {

using linattn_test::element_size;
using linattn_test::load_element;
using linattn_test::span_elements;
using linattn_test::store_element;

// Consumes the fuzz input front to back; past the end it yields zeros.
class Reader {
 public:
  Reader(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  uint8_t byte() { return pos_ < size_ ? data_[pos_++] : 0; }
  int pick(int n) { return byte() % n; }
  bool flag() { return byte() & 1; }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

// What the current input decoded to, printed with a finding.
std::string g_call;

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "capi_fuzz: %s (last error: \"%s\")\ncall: %s\n", what,
                 linattn_last_error(), g_call.c_str());
    std::abort();
  }
}

// What the bytes of one tensor's values mean.
enum class Values { data, log_decay, beta, upstream, negative, positive };

// One view with the memory behind it. Storage is over-allocated by 8 bytes so that a
// misaligned data pointer stays inside the buffer.
struct Tensor {
  linattn_tensor view{};
  std::vector<unsigned char> storage;
  bool tame = true;  // every value finite and in its documented range
};

float decode_value(Reader& in, Values kind, bool* tame) {
  const uint8_t b = in.byte();
  if (b >= 248) {  // specials: the input policy must handle each (docs/design.md)
    *tame = false;
    const float specials[] = {NAN, INFINITY, -INFINITY, 1e30f, -1e30f, 1e-40f, -0.0f, 3.0f};
    return specials[b - 248];
  }
  switch (kind) {
    case Values::log_decay: return b == 1 ? -INFINITY : -static_cast<float>(b) / 16.0f;  // <= 0
    case Values::beta: return static_cast<float>(b) / 123.0f;  // [0, 2]
    case Values::negative: return -static_cast<float>(b) / 16.0f;  // the scan's A: finite, <= 0
    case Values::positive: return (1.0f + static_cast<float>(b)) / 16.0f;  // LLA's ridge lambdas
    default: return (static_cast<float>(b) - 124.0f) / 48.0f;
  }
}

// Allocates the buffer behind t.view (after the corruptions chose its final form), fills it
// from the input and points view.data at element 0.
void materialise(Tensor& t, Reader& in, Values kind, bool null_data, int misalign) {
  if (t.view.ndim <= 0 || t.view.ndim > LINATTN_MAX_DIMS) return;
  const size_t esize = element_size(t.view.dtype);
  int64_t lowest = 0;
  const int64_t span = span_elements(t.view, &lowest, 4096);
  const int64_t count = span < 0 ? 1 : span;
  t.storage.assign(static_cast<size_t>(count) * esize + 8, 0);
  unsigned char* first = t.storage.data() + misalign;
  for (int64_t e = 0; e < count; ++e)
    store_element(first, t.view.dtype, e, decode_value(in, kind, &t.tame));
  t.view.data = null_data ? nullptr : first - lowest * static_cast<int64_t>(esize);
}

linattn_tensor shaped(int32_t dtype, std::initializer_list<int64_t> dims) {
  std::vector<int64_t> d(dims);
  return linattn_tensor_contiguous(nullptr, static_cast<linattn_dtype>(dtype),
                                   static_cast<int32_t>(d.size()), d.data());
}

// Roles of the tensors one call can see; a corruption names one.
// low_a, low_b: dplr_delta_rule's low-rank transition a, b; dlow_a, dlow_b their gradients.
enum Role { q, k, v, g, gk, beta, h0, cu, o, ht, d_o, dht, dq, dk, dv, dg, dgk, dbeta, dh0,
            low_a, low_b, dlow_a, dlow_b, kRoles };

// A corruption of one of `count` views. Each keeps the view backed by enough memory except
// `overflow`, whose sizes no buffer can back (validation must reject it before reading).
void corrupt(Tensor* ts, int count, Reader& in, int* misalign, bool* null_data, int* alias_of) {
  const int role = in.pick(count);
  linattn_tensor& t = ts[role].view;
  // An earlier corruption may have left the rank out of range.
  const bool ranked = t.ndim > 0 && t.ndim <= LINATTN_MAX_DIMS;
  const int dim = ranked ? in.pick(t.ndim) : 0;
  switch (in.pick(10)) {
    case 0: if (ranked) t.shape[dim] = static_cast<int64_t>(in.pick(12)) - 2; break;
    case 1: t.ndim = static_cast<int32_t>(in.pick(LINATTN_MAX_DIMS + 3)) - 1; break;
    case 2: t.dtype = static_cast<int32_t>(in.pick(7)) - 1; break;
    case 3: if (ranked) t.strides[dim] = static_cast<int64_t>(in.pick(12)) - 3; break;
    case 4: null_data[role] = true; break;
    case 5: misalign[role] = 1 + in.pick(3); break;
    case 6: alias_of[role] = in.pick(count); break;
    case 7: t.ndim = 0; break;  // not given
    case 8: if (t.ndim == 0) t = shaped(LINATTN_DTYPE_F32, {1, 2, 1}); break;  // an extra one
    case 9:  // sizes whose product overflows int64 (B*T*H*K beyond size_t)
      if (ranked && t.ndim >= 2) t.shape[0] = t.shape[t.ndim - 1] = int64_t{1} << 33;
      break;
  }
}

// Points each aliased view (alias_of[r] != count) at the other's memory, only between views
// whose data starts their buffer, the larger buffer backing the smaller view; an alias that
// cannot be made is cleared. `holds_minus_inf(r)`: view r may hold -inf (a log decay), valid
// for that view only, so a view aliasing it is not tame any more.
template <typename MinusInf>
void apply_aliases(Tensor* ts, int count, int* alias_of, MinusInf holds_minus_inf) {
  const auto at_start = [&](int r) { return ts[r].view.data == ts[r].storage.data(); };
  for (int r = 0; r < count; ++r) {
    const int other = alias_of[r];
    if (other == count || !at_start(r) || !at_start(other) ||
        ts[other].storage.size() < ts[r].storage.size()) {
      alias_of[r] = count;
      continue;
    }
    ts[r].view.data = ts[other].view.data;
    ts[r].tame = ts[other].tame && (other == r || !holds_minus_inf(other));
  }
}

bool all_finite(const Tensor& t) {
  if (t.view.ndim == 0 || t.view.data == nullptr) return true;
  int64_t lowest = 0;
  // Every element the view spans, from its lowest (in-place states may have negative strides).
  const int64_t n = span_elements(t.view, &lowest, 4096);
  for (int64_t e = 0; e < n; ++e)
    if (!std::isfinite(load_element(t.view.data, t.view.dtype, lowest + e))) return false;
  return true;
}

// linattn_forward / linattn_backward on every op of linattn::Op.
void fuzz_matrix_ops(Reader& in) {
  const int op_id = in.pick(linattn::kNumOps + 1);  // one past the last: an unknown id
  const int form_id = in.pick(linattn::kNumForms + 1);
  const bool backward = in.flag();
  const int32_t dtype = in.pick(3);  // f32, bf16, f64
  const int64_t H = 1 + in.pick(2), HV = H * (1 + in.pick(2)), K = 1 + in.pick(4),
                V = 1 + in.pick(4);
  const int n_h = 1 + in.pick(2);
  const uint8_t flags = in.byte();
  const bool varlen = flags & 1, give_h0 = flags & 2, want_ht = flags & 4, normalize = flags & 8,
             l2norm = flags & 16, set_scale = flags & 32, force_gates = flags & 64;
  int64_t B = 1 + in.pick(2), T = 1 + in.pick(9);
  std::vector<int64_t> offsets{0};
  if (varlen) {
    B = 1;
    while (offsets.back() < T) offsets.push_back(std::min<int64_t>(T, offsets.back() + 1 + in.pick(4)));
  }
  const int64_t N = varlen ? static_cast<int64_t>(offsets.size()) - 1 : B;

  const auto op = static_cast<linattn::Op>(op_id < linattn::kNumOps ? op_id : 0);
  const linattn::OpSpec& spec = linattn::op_spec(op);
  const int64_t TK = T * n_h;
  Tensor ts[kRoles];
  ts[q].view = shaped(dtype, {B, T, H, K});
  ts[k].view = shaped(dtype, {B, TK, H, K});
  ts[v].view = shaped(dtype, {B, TK, HV, V});
  if (spec.takes_g && (spec.requires_g || force_gates)) ts[g].view = shaped(dtype, {B, T, HV});
  if (spec.takes_gk) ts[gk].view = shaped(dtype, {B, T, HV, K});
  if (spec.takes_beta) ts[beta].view = shaped(dtype, {B, TK, HV});
  if (spec.takes_ab) ts[low_a].view = ts[low_b].view = shaped(dtype, {B, T, H, K});
  if (give_h0) ts[h0].view = shaped(LINATTN_DTYPE_F32, {N, HV, K, V});
  if (varlen) ts[cu].view = shaped(in.flag() ? LINATTN_DTYPE_I64 : LINATTN_DTYPE_I32,
                                   {static_cast<int64_t>(offsets.size())});
  ts[o].view = shaped(dtype, {B, T, HV, V});
  if (want_ht) ts[ht].view = shaped(LINATTN_DTYPE_F32, {N, HV, K, V});
  ts[d_o].view = shaped(dtype, {B, T, HV, V});
  if (want_ht) ts[dht].view = shaped(LINATTN_DTYPE_F32, {N, HV, K, V});
  for (Role input : {q, k, v, g, gk, beta, h0})  // each gradient mirrors its input
    if (ts[input].view.ndim > 0 && in.flag())
      ts[dq + (input - q)].view = ts[input].view;
  for (Role input : {low_a, low_b})
    if (ts[input].view.ndim > 0 && in.flag()) ts[dlow_a + (input - low_a)].view = ts[input].view;

  int misalign[kRoles] = {};
  bool null_data[kRoles] = {};
  int alias_of[kRoles];
  for (int& r : alias_of) r = kRoles;
  const int corruptions = in.pick(4);
  for (int i = 0; i < corruptions; ++i) corrupt(ts, kRoles, in, misalign, null_data, alias_of);

  const Values kinds[kRoles] = {Values::data, Values::data, Values::data, Values::log_decay,
                                Values::log_decay, Values::beta, Values::data, Values::data,
                                Values::data, Values::data, Values::upstream, Values::upstream};
  for (int r = 0; r < kRoles; ++r)
    if (r != cu) materialise(ts[r], in, kinds[r], null_data[r], misalign[r]);
  if (varlen) {  // offsets, possibly shuffled: out of order and out of range must be rejected
    materialise(ts[cu], in, Values::data, null_data[cu], misalign[cu]);
    if (ts[cu].view.data != nullptr && misalign[cu] == 0 && ts[cu].view.ndim == 1) {
      int64_t lowest = 0;
      const int64_t n = span_elements(ts[cu].view, &lowest) < 0
                            ? 0 : std::min<int64_t>(ts[cu].view.shape[0], offsets.size());
      const bool shuffle = in.pick(4) == 0;
      for (int64_t i = 0; i < n; ++i) {
        const int64_t value = shuffle ? static_cast<int64_t>(in.pick(12)) - 2 : offsets[i];
        store_element(ts[cu].view.data, ts[cu].view.dtype, i * ts[cu].view.strides[0],
                      static_cast<double>(value));
      }
    }
  }
  apply_aliases(ts, kRoles, alias_of, [](int r) { return r == g || r == gk; });

  linattn_args a;
  linattn_args_init(&a);
  a.q = ts[q].view; a.k = ts[k].view; a.v = ts[v].view; a.g = ts[g].view; a.gk = ts[gk].view;
  a.beta = ts[beta].view; a.initial_state = ts[h0].view; a.cu_seqlens = ts[cu].view;
  a.a = ts[low_a].view; a.b = ts[low_b].view;
  a.output_final_state = want_ht;
  a.normalize = normalize;
  a.use_qk_l2norm_in_kernel = l2norm;
  a.num_householder = n_h;
  if (set_scale) a.scale = (static_cast<double>(in.byte()) - 128.0) / 32.0;
  g_call = "op " + std::to_string(op_id) + " form " + std::to_string(form_id) +
           (backward ? " backward" : " forward") + " dtype " + std::to_string(dtype) +
           " B T H HV K V n_h = " + std::to_string(B) + " " + std::to_string(T) + " " +
           std::to_string(H) + " " + std::to_string(HV) + " " + std::to_string(K) + " " +
           std::to_string(V) + " " + std::to_string(n_h) + " flags " + std::to_string(flags) +
           " scale " + std::to_string(a.scale) + " corruptions " + std::to_string(corruptions);
  const auto c_op = static_cast<linattn_op>(op_id);
  const auto c_form = static_cast<linattn_form>(form_id);

  int64_t o_shape[4], ht_shape[4];
  const linattn_status shapes = linattn_output_shapes(c_op, &a, o_shape, ht_shape);
  check(shapes == LINATTN_OK || shapes == LINATTN_ERROR_INVALID_ARGUMENT, "output_shapes status");
  linattn_status status;
  if (!backward) {
    status = linattn_forward(c_op, c_form, &a, in.pick(8) ? &ts[o].view : nullptr,
                             want_ht || in.pick(4) == 0 ? &ts[ht].view : nullptr);
  } else {
    linattn_grads grads{ts[dq].view, ts[dk].view, ts[dv].view, ts[dg].view,
                        ts[dgk].view, ts[dbeta].view, ts[dh0].view, ts[dlow_a].view,
                        ts[dlow_b].view};
    status = linattn_backward(c_op, c_form, &a, &ts[d_o].view, &ts[dht].view,
                              in.pick(8) ? &grads : nullptr);
  }
  const bool ok = status == LINATTN_OK;
  check(ok || status == LINATTN_ERROR_INVALID_ARGUMENT || status == LINATTN_ERROR_NOT_IMPLEMENTED,
        "unexpected status (internal error or out of memory on a tiny problem)");
  check(ok == (linattn_last_error()[0] == '\0'), "status and last error disagree");
  if (!ok) return;
  check(shapes == LINATTN_OK, "a call succeeded whose inputs output_shapes rejected");

  // No silent NaN: finite inputs in range give finite outputs.
  bool tame = true;
  for (Role r : {q, k, v, g, gk, beta, h0, d_o, dht, low_a, low_b}) tame = tame && ts[r].tame;
  if (!tame || alias_of[o] != kRoles) return;
  // (A final_state given without output_final_state is not written: its contents are the
  // harness's own, possibly non-finite.)
  for (Role r : backward ? std::vector<Role>{dq, dk, dv, dg, dgk, dbeta, dh0, dlow_a, dlow_b}
                         : want_ht ? std::vector<Role>{o, ht} : std::vector<Role>{o})
    check(alias_of[r] != kRoles || all_finite(ts[r]), "NaN or Inf output from finite inputs");
}

// The families with an API of their own (tests/support/families.hpp): one of their calls
// (forward, backward, decode / update steps), a form id, a dtype, sizes, flags, which optional
// tensors to give, up to three corruptions of the views, their data, then the C API call.
void fuzz_families(Reader& in) {
  using linattn_test::Fill;
  const std::vector<std::string>& calls = linattn_test::family_calls();
  const std::string& call = calls[in.pick(static_cast<int>(calls.size()))];
  const std::string family = call.substr(0, call.find(':')), pass = call.substr(call.find(':') + 1);
  const int form_id = in.pick(linattn::kNumForms + 1);
  const int32_t dtype = in.pick(3);  // f32, bf16, f64
  linattn_test::FamilySizes s;
  s.B = 1 + in.pick(2);
  s.T = 1 + in.pick(9);
  s.H = 1 + in.pick(2);
  s.K = 1 + in.pick(4);
  s.V = 1 + in.pick(4);
  s.W = 1 + in.pick(4);
  s.N = 1 + in.pick(4);
  s.G = 1 + in.pick(2);
  s.D = s.G * (1 + in.pick(3));
  s.Tq = 1 + in.pick(static_cast<int>(s.T));
  const uint8_t bits = in.byte();
  if (bits & 1) {  // cu_seqlens with random lengths
    s.B = 1;
    s.offsets = {0};
    while (s.offsets.back() < s.T)
      s.offsets.push_back(std::min<int64_t>(s.T, s.offsets.back() + 1 + in.pick(4)));
  }
  std::vector<linattn_test::Slot> slots = linattn_test::family_slots(family, pass, s);
  const int count = static_cast<int>(slots.size());
  std::vector<Tensor> ts(count);
  const uint8_t optional = in.byte();  // drops optional tensors, gives ridge_lambda_per_token
  int bit = 0;
  for (int i = 0; i < count; ++i) {
    linattn_tensor& t = ts[i].view;
    t = slots[i].view;
    const std::string& name = slots[i].name;
    const bool is_state = name.find("state") != std::string::npos || name == "lse";
    if (t.ndim > 0 && slots[i].fill != Fill::index && !is_state)
      t = linattn_tensor_contiguous(nullptr, static_cast<linattn_dtype>(dtype), t.ndim, t.shape);
    const bool optional_input = name == "bias" || name == "residual" || name == "D" ||
                                name == "z" || name == "delta_bias" || name == "dt_bias" ||
                                name == "initial_state" || name == "lse" ||
                                (pass == "backward" && slots[i].written);  // gradients
    if (optional_input && ((optional >> (bit++ % 8)) & 1)) t = linattn_tensor{};
    if (name == "ridge_lambda_per_token" && (bits & 2)) t = slots[i].natural;
  }
  std::map<std::string, double> flags = linattn_test::family_flags();
  flags["window_size"] = in.pick(6) - 1;
  flags["activation"] = in.pick(3);  // 2: an unknown activation
  flags["output_final_state"] = (bits >> 2) & 1;
  flags["softplus"] = (bits >> 3) & 1;
  flags["direct_solve"] = (bits >> 4) & 1;
  flags["cg_use_preconditioner"] = (bits >> 5) & 1;
  flags["cg_max_iters"] = in.pick(40);
  flags["ridge_lambda"] = (static_cast<double>(in.byte()) - 8.0) / 8.0;
  if (bits & 64) flags["scale"] = (static_cast<double>(in.byte()) - 128.0) / 32.0;
  if (!flags["output_final_state"])
    for (int i = 0; i < count; ++i)
      if (slots[i].name == "final_state") ts[i].view = linattn_tensor{};

  std::vector<int> misalign(count), alias_of(count, count);
  std::unique_ptr<bool[]> null_data(new bool[count]());
  const int corruptions = in.pick(4);
  for (int i = 0; i < corruptions; ++i)
    corrupt(ts.data(), count, in, misalign.data(), null_data.get(), alias_of.data());
  for (int i = 0; i < count; ++i) {
    const Fill fill = slots[i].fill;
    const Values kind = fill == Fill::negative   ? Values::negative
                        : fill == Fill::positive ? Values::positive
                        : fill == Fill::output   ? Values::upstream
                                                 : Values::data;
    materialise(ts[i], in, kind, null_data[i], misalign[i]);
    // Index tensors: cu_seqlens gets the offsets, cache_seqlens lengths in [Tq, T]; either may
    // be shuffled (out of order, out of range: to be rejected).
    linattn_tensor& t = ts[i].view;
    if (fill != Fill::index || t.data == nullptr || misalign[i] || t.ndim != 1) continue;
    int64_t lowest = 0;
    if (span_elements(t, &lowest) < 0) continue;
    const bool shuffle = in.pick(4) == 0;
    for (int64_t e = 0; e < t.shape[0]; ++e) {
      const bool cu_seqlens = slots[i].name == "cu_seqlens";
      int64_t value = cu_seqlens ? (e < static_cast<int64_t>(s.offsets.size()) ? s.offsets[e] : 0)
                                 : s.Tq + in.pick(static_cast<int>(s.T - s.Tq + 1));
      if (shuffle) value = static_cast<int64_t>(in.pick(12)) - 2;
      store_element(t.data, t.dtype, e * t.strides[0], static_cast<double>(value));
    }
  }
  apply_aliases(ts.data(), count, alias_of.data(), [](int) { return false; });
  for (int i = 0; i < count; ++i) slots[i].view = ts[i].view;

  g_call = call + " form " + std::to_string(form_id) + " dtype " + std::to_string(dtype) +
           " B T H K V D W N G Tq = " + std::to_string(s.B) + " " + std::to_string(s.T) + " " +
           std::to_string(s.H) + " " + std::to_string(s.K) + " " + std::to_string(s.V) + " " +
           std::to_string(s.D) + " " + std::to_string(s.W) + " " + std::to_string(s.N) + " " +
           std::to_string(s.G) + " " + std::to_string(s.Tq) + " bits " + std::to_string(bits) +
           " optional " + std::to_string(optional) + " corruptions " + std::to_string(corruptions);
  const std::set<std::string> null_args = in.pick(16) == 0 ? std::set<std::string>{"args"}
                                                            : std::set<std::string>{};
  const linattn_status status =
      linattn_test::run_family_c(family, pass, form_id, slots, flags, null_args);
  const bool ok = status == LINATTN_OK;
  check(ok || status == LINATTN_ERROR_INVALID_ARGUMENT || status == LINATTN_ERROR_NOT_IMPLEMENTED,
        "unexpected status (internal error or out of memory on a tiny problem)");
  check(ok == (linattn_last_error()[0] == '\0'), "status and last error disagree");
  if (!ok) return;
  // No silent NaN: finite inputs in range give finite outputs. Not checked where the math
  // itself may overflow: the scan without softplus (a negative step makes exp(delta A) grow)
  // and LLA with a ridge or an iteration count small enough to leave delta_i near 0; and the
  // attention backward given an lse, which must be the forward's log-sum-exp (a random one makes
  // exp(s - lse) overflow: garbage in, documented in attention.hpp).
  if (family == "scan" && !flags["softplus"]) return;
  for (int i = 0; i < count; ++i)
    if (family == "attention" && pass == "backward" && slots[i].name == "lse" && ts[i].view.ndim != 0) return;
  if (family == "lla" && (flags["ridge_lambda"] < 1 || flags["cg_max_iters"] < 8)) return;
  for (int i = 0; i < count; ++i)
    if ((slots[i].fill != Fill::output && !ts[i].tame) || alias_of[i] != count) return;
  for (int i = 0; i < count; ++i)
    if (slots[i].written) check(all_finite(ts[i]), "NaN or Inf output from finite inputs");
}

// Name lookups: any bytes as a name, any int as an id.
void fuzz_names(Reader& in) {
  std::string name;
  for (int n = in.pick(24); n > 0; --n) name += static_cast<char>(in.byte());
  linattn_op op;
  if (linattn_op_from_name(name.c_str(), &op) == LINATTN_OK)
    check(std::strcmp(linattn_op_name(op), name.c_str()) == 0, "name round trip");
  const auto id = static_cast<int32_t>(in.byte()) - 128;
  linattn_op_name(static_cast<linattn_op>(id));
  linattn_has_form(static_cast<linattn_op>(id), static_cast<linattn_form>(in.pick(6) - 1), in.flag());
}

// Entry points, chosen by the first byte. Families with an API of their own add theirs here.
struct Target {
  const char* name;
  void (*run)(Reader&);
};
const Target kTargets[] = {
    {"linattn_forward/linattn_backward", fuzz_matrix_ops},
    {"attention, lla, conv1d, scan (tests/support/families.hpp)", fuzz_families},
    {"names", fuzz_names},
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Reader in(data, size);
  const uint8_t selector = in.byte();
  // Mostly the ops (the first bytes of the corpus from before the families were added), then the
  // families; the names target is small.
  const Target& target = selector < 200 ? kTargets[0] : selector < 250 ? kTargets[1] : kTargets[2];
  target.run(in);
  return 0;
}
