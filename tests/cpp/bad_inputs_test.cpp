// The bad-input catalogue (tests/bad_inputs/catalogue.txt, format described there) through the
// C++ API and the C API: each row builds the valid base problem of its op, applies its edits,
// makes the call and checks the error kind and message fragment, or for the NaN/Inf policy rows
// what reached the outputs. tests/python/test_bad_inputs.py runs the same rows in Python.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "check/harness.hpp"
#include "linattn/error.hpp"
#include "linattn/linattn.h"
#include "linattn/ops.hpp"
#include "linattn/attention.hpp"
#include "linattn/conv1d.hpp"
#include "linattn/lla.hpp"
#include "linattn/scan.hpp"
#include "support/families.hpp"
#include "support/view_memory.hpp"

namespace {

using linattn_test::element_size;
using linattn_test::load_element;
using linattn_test::span_elements;
using linattn_test::store_element;
using linattn_test::strided_offset;
using TestSlot = linattn_test::Slot;

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> parts;
  std::stringstream in(s);
  for (std::string part; std::getline(in, part, sep);) {
    const size_t first = part.find_first_not_of(' '), last = part.find_last_not_of(' ');
    parts.push_back(first == std::string::npos ? "" : part.substr(first, last - first + 1));
  }
  return parts;
}

std::vector<std::string> words(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

struct Row {
  std::string name, op, pass, form = "reference", expect, message;
  std::set<std::string> apis;
  std::vector<std::vector<std::string>> edits;  // each: command and its arguments
};

std::vector<Row> load_catalogue() {
  std::ifstream in(LINATTN_SOURCE_DIR "/tests/bad_inputs/catalogue.txt");
  std::vector<Row> rows;
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    // The message may itself contain " | "-free text only; split on the first five separators.
    std::vector<std::string> cols;
    size_t start = 0;
    for (int i = 0; i < 5; ++i) {
      const size_t bar = line.find(" | ", start);
      if (bar == std::string::npos) break;
      cols.push_back(line.substr(start, bar - start));
      start = bar + 3;
    }
    cols.push_back(line.substr(start));
    if (cols.size() != 6) throw std::runtime_error("catalogue: malformed row: " + line);
    Row r;
    r.name = cols[0];
    for (const std::string& a : words(cols[1])) r.apis.insert(a);
    const std::vector<std::string> call = split(cols[2], ':');
    r.op = call.at(0);
    r.pass = call.at(1);
    if (call.size() > 2) r.form = call[2];
    if (cols[3] != "-")
      for (const std::string& e : split(cols[3], ';'))
        if (!e.empty()) r.edits.push_back(words(e));
    r.expect = cols[4];
    r.message = cols[5];
    rows.push_back(r);
  }
  return rows;
}

void PrintTo(const Row& row, std::ostream* out) { *out << row.name; }

const std::vector<Row>& catalogue() {
  static const std::vector<Row> rows = load_catalogue();
  return rows;
}

// The tensors of an op of ops.hpp, in this order (Slot indexes them); the gradients follow dq
// in the order of their inputs q .. initial_state, then a, b and their gradients (dplr).
const char* const kTensorNames[] = {"q",  "k",  "v",  "g",  "gk", "beta", "initial_state",
                                    "cu_seqlens", "o", "final_state", "do", "dfinal_state",
                                    "dq", "dk", "dv", "dg", "dgk", "dbeta", "dinitial_state",
                                    "a", "b", "da", "db"};
constexpr int kTensors = 23;
enum Slot { q, k, v, g, gk, beta, h0, cu, o, ht, d_o, dht, dq, a_ = dq + 7, b_, da, db };

int32_t dtype_of(const std::string& name) {
  const std::map<std::string, int32_t> ids = {
      {"float32", LINATTN_DTYPE_F32}, {"bfloat16", LINATTN_DTYPE_BF16},
      {"float64", LINATTN_DTYPE_F64}, {"int32", LINATTN_DTYPE_I32}, {"int64", LINATTN_DTYPE_I64}};
  const auto it = ids.find(name);
  return it != ids.end() ? it->second : static_cast<int32_t>(std::stol(name));
}

double number(const std::string& s) {
  if (s == "nan") return NAN;
  if (s == "inf") return INFINITY;
  if (s == "-inf") return -INFINITY;
  return std::stod(s);
}

linattn_tensor contiguous(int32_t dtype, int32_t ndim, const int64_t* shape) {
  return linattn_tensor_contiguous(nullptr, static_cast<linattn_dtype>(dtype), ndim, shape);
}

linattn::TensorView cpp_view(const linattn_tensor& t) {
  linattn::TensorView view;
  if (t.ndim == 0) return view;
  if (t.ndim < 0 || t.ndim > LINATTN_MAX_DIMS || t.dtype < 0 || t.dtype > LINATTN_DTYPE_I64)
    throw std::runtime_error("catalogue: a cpp row uses a view only C can express");
  view.data = t.data;
  view.dtype = static_cast<linattn::DType>(t.dtype);
  view.ndim = t.ndim;
  for (int d = 0; d < t.ndim; ++d) view.shape[d] = t.shape[d], view.strides[d] = t.strides[d];
  return view;
}

// A family call through the C++ API (run_family_c in tests/support/families.hpp is the C one).
void run_family_cpp(const std::string& family, const std::string& pass, linattn::Form form,
                    std::vector<TestSlot>& slots, const std::map<std::string, double>& flags) {
  using namespace linattn;
  auto t = [&](const char* name) { return cpp_view(*linattn_test::slot_view(slots, name)); };
  auto flag = [&](const char* name) { return flags.at(name); };
  auto i32 = [&](const char* name) { return static_cast<int32_t>(flag(name)); };
  if (family == "attention" && pass == "decode") {
    AttentionCacheArgs a{t("q"), t("k_cache"), t("v_cache"), t("cache_seqlens"), flag("scale"),
                         static_cast<int64_t>(flag("window_size"))};
    return attention_decode(form, a, t("o"));
  }
  if (family == "attention") {
    AttentionArgs a{t("q"), t("k"), t("v"), t("cu_seqlens"), flag("scale"),
                    static_cast<int64_t>(flag("window_size"))};
    if (pass == "forward") return attention_forward(form, a, {t("o"), t("lse")});
    return attention_backward(form, a, t("o"), t("lse"), t("do"), {t("dq"), t("dk"), t("dv")});
  }
  if (family == "lla") {
    lla::Args a;
    a.q = t("q"); a.k = t("k"); a.v = t("v");
    a.ridge_lambda_per_token = t("ridge_lambda_per_token"); a.cu_seqlens = t("cu_seqlens");
    a.ridge_lambda = flag("ridge_lambda");
    a.scale = flag("scale");
    a.delta_eps = flag("delta_eps");
    a.cg_atol = flag("cg_atol");
    a.cg_rtol = flag("cg_rtol");
    a.cg_max_iters = i32("cg_max_iters");
    a.cg_use_preconditioner = i32("cg_use_preconditioner") != 0;
    a.solver = i32("direct_solve") ? lla::Solver::direct : lla::Solver::cg;
    if (pass == "forward") return lla::forward(form, a, t("o"));
    return lla::backward(form, a, t("do"),
                         {t("dq"), t("dk"), t("dv"), t("dridge_lambda_per_token")});
  }
  const auto activation = static_cast<Activation>(i32("activation"));
  if (family == "conv1d" && pass == "update")
    return causal_conv1d_update({t("x"), t("cache"), t("weight"), t("bias"), t("residual"),
                                 activation}, t("y"));
  if (family == "conv1d") {
    Conv1dArgs a{t("x"), t("weight"), t("bias"), t("residual"), t("initial_state"),
                 t("cu_seqlens"), i32("output_final_state") != 0, activation};
    if (pass == "forward") return causal_conv1d_forward(form, a, {t("y"), t("final_state")});
    return causal_conv1d_backward(form, a, {t("dy"), t("dfinal_state")},
                                  {t("dx"), t("dweight"), t("dbias"), t("dresidual"),
                                   t("dinitial_state")});
  }
  if (family == "scan" && pass == "update")
    return selective_state_update({t("state"), t("x"), t("dt"), t("A"), t("B"), t("C"), t("D"),
                                   t("z"), t("dt_bias"), i32("softplus") != 0}, t("y"));
  ScanArgs a{t("u"), t("delta"), t("A"), t("B"), t("C"), t("D"), t("z"), t("delta_bias"),
             t("initial_state"), t("cu_seqlens"), i32("softplus") != 0,
             i32("output_final_state") != 0};
  if (pass == "forward") return selective_scan_forward(form, a, {t("y"), t("final_state")});
  selective_scan_backward(form, a, {t("dy"), t("dfinal_state")},
                          {t("du"), t("ddelta"), t("dA"), t("dB"), t("dC"), t("dD"), t("dz"),
                           t("ddelta_bias"), t("dinitial_state")});
}

// One row's call: the base problem with the row's edits, the memory behind every view, and
// the C arguments (the C++ ones are converted from them).
class Call {
 public:
  static constexpr int64_t H = 2, HV = 4, K = 4, V = 3;

  explicit Call(const Row& row) : row_(row), family_(linattn_test::is_family(row.op)) {
    form_id_ = static_cast<int32_t>(linattn::form_from_name(row.form));
    for (const auto& e : row.edits) {  // layout first: the base depends on it
      if (e[0] == "batch") B_ = std::stol(e.at(1)), T_ = std::stol(e.at(2));
      if (e[0] == "cu") {
        for (const std::string& x : split(e.at(1), ',')) offsets_.push_back(std::stol(x));
      }
    }
    if (family_) {
      linattn_test::FamilySizes sizes;
      sizes.B = B_;
      sizes.T = T_;
      sizes.offsets = offsets_;
      slots_ = linattn_test::family_slots(row.op, row.pass, sizes);
      flags_ = linattn_test::family_flags();
    } else {
      op_ = linattn::op_from_name(row.op);
      op_id_ = static_cast<int32_t>(op_);
      build_base();
    }
    const size_t n = slots_.size();
    storage_.resize(n);
    null_.assign(n, false);
    misalign_.assign(n, false);
    alias_.assign(n, -1);
    for (const auto& e : row.edits) edit(e);
    materialise();
  }
  Call(const Call&) = delete;

  // The C API: returns the status; the message is linattn_last_error().
  linattn_status run_c() {
    if (family_)
      return linattn_test::run_family_c(row_.op, row_.pass, form_id_, slots_, flags_, null_args_);
    linattn_args a;
    linattn_args_init(&a);
    a.q = view(q); a.k = view(k); a.v = view(v); a.g = view(g); a.gk = view(gk);
    a.beta = view(beta); a.initial_state = view(h0); a.cu_seqlens = view(cu);
    a.a = view(a_); a.b = view(b_);
    a.scale = scale_;
    a.output_final_state = output_final_state_;
    a.normalize = normalize_;
    a.use_qk_l2norm_in_kernel = l2norm_;
    a.num_householder = num_householder_;
    const linattn_args* args = null_args_.count("args") ? nullptr : &a;
    const auto op = static_cast<linattn_op>(op_id_);
    const auto form = static_cast<linattn_form>(form_id_);
    if (row_.pass == "shapes") {
      int64_t o_shape[4], state_shape[4];
      return linattn_output_shapes(op, args, null_args_.count("o_shape") ? nullptr : o_shape,
                                   state_shape);
    }
    if (row_.pass == "forward")
      return linattn_forward(op, form, args, null_args_.count("o") ? nullptr : &slots_[o].view,
                             &slots_[ht].view);
    linattn_grads grads{view(dq), view(dq + 1), view(dq + 2), view(dq + 3), view(dq + 4),
                        view(dq + 5), view(dq + 6), view(da), view(db)};
    return linattn_backward(op, form, args, null_args_.count("d_o") ? nullptr : &slots_[d_o].view,
                            &slots_[dht].view, null_args_.count("grads") ? nullptr : &grads);
  }

  // The C++ API: throws what it throws.
  void run_cpp() {
    const auto form = static_cast<linattn::Form>(form_id_);
    if (family_) return run_family_cpp(row_.op, row_.pass, form, slots_, flags_);
    linattn::OpArgs a;
    a.q = cpp(q); a.k = cpp(k); a.v = cpp(v); a.g = cpp(g); a.gk = cpp(gk); a.beta = cpp(beta);
    a.initial_state = cpp(h0); a.cu_seqlens = cpp(cu); a.a = cpp(a_); a.b = cpp(b_);
    a.scale = scale_;
    a.output_final_state = output_final_state_;
    a.normalize = normalize_;
    a.use_qk_l2norm_in_kernel = l2norm_;
    a.num_householder = num_householder_;
    if (row_.pass == "shapes") {
      linattn::output_shapes(op_, a);
    } else if (row_.pass == "forward") {
      linattn::forward(op_, form, a, {cpp(o), cpp(ht)});
    } else {
      linattn::backward(op_, form, a, {cpp(d_o), cpp(dht)},
                        {cpp(dq), cpp(dq + 1), cpp(dq + 2), cpp(dq + 3), cpp(dq + 4),
                         cpp(dq + 5), cpp(dq + 6), cpp(da), cpp(db)});
    }
  }

  // Whether every written output is finite / some output holds a NaN or Inf.
  bool outputs_finite(bool* any_non_finite) const {
    bool all = true;
    *any_non_finite = false;
    for (const TestSlot& s : slots_) {
      if (!s.written || s.view.ndim == 0) continue;
      int64_t lowest = 0;
      const int64_t n = span_elements(s.view, &lowest);
      for (int64_t e = 0; e < n; ++e) {
        const bool finite = std::isfinite(load_element(s.view.data, s.view.dtype, e + lowest));
        all = all && finite;
        *any_non_finite = *any_non_finite || !finite;
      }
    }
    return all;
  }

 private:
  using Fill = linattn_test::Fill;

  linattn_tensor view(int s) const { return slots_[s].view; }

  int slot_of(const std::string& name) const {
    for (size_t i = 0; i < slots_.size(); ++i)
      if (slots_[i].name == name) return static_cast<int>(i);
    throw std::runtime_error("catalogue: " + row_.op + " has no tensor " + name);
  }

  void build_base() {
    const linattn::OpSpec& spec = linattn::op_spec(op_);
    if (spec.takes_num_householder) num_householder_ = 2;
    const int64_t TK = T_ * num_householder_;
    const int64_t N = offsets_.empty() ? B_ : static_cast<int64_t>(offsets_.size()) - 1;
    const bool backward = row_.pass == "backward";
    const std::vector<int64_t> shapes[kTensors] = {
        {B_, T_, H, K}, {B_, TK, H, K}, {B_, TK, HV, V}, {B_, T_, HV}, {B_, T_, HV, K},
        {B_, TK, HV}, {N, HV, K, V}, {static_cast<int64_t>(offsets_.size())}, {B_, T_, HV, V},
        {N, HV, K, V}, {B_, T_, HV, V}, {N, HV, K, V}, {}, {}, {}, {}, {}, {}, {},
        {B_, T_, H, K}, {B_, T_, H, K}};
    // Given in the base: what the op takes.
    const bool given[kTensors] = {
        true, true, true, spec.takes_g, spec.takes_gk, spec.takes_beta, spec.causal,
        !offsets_.empty(), true, spec.causal, backward, backward && spec.causal};
    slots_.resize(kTensors);
    for (int s = 0; s < kTensors; ++s) {
      TestSlot& slot = slots_[s];
      slot.name = kTensorNames[s];
      const int input = s >= dq && s < a_ ? s - dq : s >= da ? s - 2 : -1;  // of a gradient
      const std::vector<int64_t>& shape = input >= 0 ? shapes[input] : shapes[s];
      slot.natural = contiguous(s == cu ? LINATTN_DTYPE_I64 : LINATTN_DTYPE_F32,
                                static_cast<int32_t>(shape.size()), shape.data());
      const bool on = input >= 0 ? backward && (input >= a_ ? spec.takes_ab : given[input])
                      : s >= a_  ? spec.takes_ab
                                 : given[s];
      slot.view = on ? slot.natural : linattn_tensor{};
      slot.written = s >= o && s != d_o && s != dht && s != a_ && s != b_;
      slot.fill = slot.written ? Fill::output
                  : s == g || s == gk ? Fill::log_decay
                  : s == beta         ? Fill::beta
                  : s == cu           ? Fill::index
                                      : Fill::data;
    }
    if (row_.pass != "forward") slots_[o].view = slots_[ht].view = linattn_tensor{};
    output_final_state_ = spec.causal;
  }

  void restride(linattn_tensor& t) {
    if (t.ndim >= 0 && t.ndim <= LINATTN_MAX_DIMS) t = contiguous(t.dtype, t.ndim, t.shape);
  }

  void set_flag(const std::string& flag, double x) {
    if (family_) {
      if (!flags_.count(flag)) throw std::runtime_error("catalogue: unknown flag " + flag);
      flags_[flag] = x;
    } else if (flag == "normalize") normalize_ = x != 0;
    else if (flag == "l2norm") l2norm_ = x != 0;
    else if (flag == "num_householder") num_householder_ = static_cast<int32_t>(x);
    else if (flag == "scale") scale_ = x;
    else if (flag == "output_final_state") output_final_state_ = x != 0;
    else throw std::runtime_error("catalogue: unknown flag " + flag);
  }

  void edit(const std::vector<std::string>& e) {
    const std::string& cmd = e[0];
    if (cmd == "batch" || cmd == "cu") return;  // applied by the constructor
    if (cmd == "set") return set_flag(e.at(1), number(e.at(2)));
    if (cmd == "nullarg") { null_args_.insert(e.at(1)); return; }
    if (cmd == "opid") { op_id_ = std::stoi(e.at(1)); return; }
    if (cmd == "formid") { form_id_ = std::stoi(e.at(1)); return; }
    const int s = slot_of(e.at(1));
    linattn_tensor& t = slots_[s].view;
    if (cmd == "shape") {
      t.shape[std::stoi(e.at(2))] = std::stoll(e.at(3));
      restride(t);
    } else if (cmd == "rank") {
      const int n = std::stoi(e.at(2));
      for (int d = t.ndim; d < n && d < LINATTN_MAX_DIMS; ++d) t.shape[d] = 1;
      t.ndim = n;
      restride(t);
    } else if (cmd == "dtype") {
      t.dtype = dtype_of(e.at(2));
      restride(t);
    } else if (cmd == "stride") {
      t.strides[std::stoi(e.at(2))] = std::stoll(e.at(3));
    } else if (cmd == "drop") {
      t = linattn_tensor{};
    } else if (cmd == "give") {
      t = slots_[s].natural;
    } else if (cmd == "null") {
      null_[s] = true;
    } else if (cmd == "misalign") {
      misalign_[s] = true;
    } else if (cmd == "alias") {
      alias_[s] = slot_of(e.at(2));
    } else if (cmd == "overflow") {
      t.shape[0] = t.shape[t.ndim - 1] = int64_t{1} << 33;
      restride(t);
    } else if (cmd == "value") {
      values_.push_back({s, std::stoll(e.at(2)), number(e.at(3))});
    } else {
      throw std::runtime_error("catalogue: unknown edit " + cmd);
    }
  }

  // The value of element i of an input in its documented range (outputs: NaN).
  double base_value(const TestSlot& slot, int64_t i, std::mt19937& rng) const {
    std::uniform_real_distribution<double> unit(0.0, 1.0);
    switch (slot.fill) {
      case Fill::log_decay: case Fill::negative: return -0.01 - unit(rng);
      case Fill::beta: return 0.1 + 0.9 * unit(rng);
      case Fill::positive: return 0.5 + unit(rng);
      case Fill::output: return NAN;
      case Fill::index:  // cu_seqlens offsets; cache_seqlens: the full cache, then fewer rows
        if (slot.name == "cu_seqlens") return static_cast<double>(offsets_.at(i));
        return static_cast<double>(T_ - 2 * i);
      default: return 2.0 * unit(rng) - 1.0;
    }
  }

  // Allocates and fills the memory of every view: inputs get values in their documented
  // ranges, outputs NaN (a finite result then proves it was written), cu_seqlens the offsets.
  void materialise() {
    std::mt19937 rng(7);
    for (size_t s = 0; s < slots_.size(); ++s) {
      linattn_tensor& t = slots_[s].view;
      if (t.ndim <= 0 || t.ndim > LINATTN_MAX_DIMS) continue;
      int64_t lowest = 0;
      const int64_t span = span_elements(t, &lowest);
      const size_t esize = element_size(t.dtype);
      storage_[s].assign((std::max<int64_t>(span, 1) * esize + 16) / 8 + 1, 0.0);
      auto* first = reinterpret_cast<unsigned char*>(storage_[s].data()) + (misalign_[s] ? 1 : 0);
      t.data = first - lowest * static_cast<int64_t>(esize);
      if (span < 0) continue;  // cannot be backed: validation must reject it unread
      int64_t n = 1;
      for (int d = 0; d < t.ndim; ++d) n *= t.shape[d];
      for (int64_t i = 0; i < n; ++i)
        store_element(t.data, t.dtype, strided_offset(t, i), base_value(slots_[s], i, rng));
    }
    for (const auto& [s, i, x] : values_)
      store_element(slots_[s].view.data, slots_[s].view.dtype, strided_offset(slots_[s].view, i), x);
    for (size_t s = 0; s < slots_.size(); ++s) {
      if (alias_[s] >= 0) slots_[s].view.data = slots_[alias_[s]].view.data;
      if (null_[s]) slots_[s].view.data = nullptr;
    }
  }

  linattn::TensorView cpp(int s) const { return cpp_view(slots_[s].view); }

  const Row& row_;
  const bool family_;
  linattn::Op op_{};
  int32_t op_id_ = 0, form_id_;
  int64_t B_ = 2, T_ = 5;
  std::vector<int64_t> offsets_;
  std::vector<TestSlot> slots_;
  std::vector<std::vector<double>> storage_;
  std::vector<bool> null_, misalign_;
  std::vector<int> alias_;
  std::vector<std::tuple<int, int64_t, double>> values_;
  std::set<std::string> null_args_;
  std::map<std::string, double> flags_;
  double scale_ = NAN;
  bool output_final_state_ = false, normalize_ = false, l2norm_ = false;
  int32_t num_householder_ = 1;
};

// A successful call must match a nan/finite row.
void expect_outputs(const Row& row, const Call& call) {
  bool any_non_finite = false;
  const bool all_finite = call.outputs_finite(&any_non_finite);
  if (row.expect == "finite") EXPECT_TRUE(all_finite) << "an output is NaN/Inf or was not written";
  if (row.expect == "nan") EXPECT_TRUE(any_non_finite) << "NaN/Inf did not reach the output";
}

class BadInput : public ::testing::TestWithParam<Row> {};

TEST_P(BadInput, CppApi) {
  const Row& row = GetParam();
  if (!row.apis.count("cpp")) GTEST_SKIP() << "not expressible in C++";
  Call call(row);
  const bool accepted = row.expect == "nan" || row.expect == "finite";
  try {
    call.run_cpp();
    EXPECT_TRUE(accepted) << "no error; expected one containing \"" << row.message << "\"";
    if (accepted) expect_outputs(row, call);
  } catch (const linattn::Error& e) {
    EXPECT_FALSE(accepted) << e.what();
    EXPECT_NE(std::string(e.what()).find(row.message), std::string::npos)
        << "expected a message containing \"" << row.message << "\", got \"" << e.what() << "\"";
  }
}

TEST_P(BadInput, CApi) {
  const Row& row = GetParam();
  if (!row.apis.count("c")) GTEST_SKIP() << "not expressible in C";
  Call call(row);
  const std::map<std::string, linattn_status> status = {
      {"invalid", LINATTN_ERROR_INVALID_ARGUMENT}, {"not_implemented", LINATTN_ERROR_NOT_IMPLEMENTED},
      {"nan", LINATTN_OK}, {"finite", LINATTN_OK}};
  EXPECT_EQ(call.run_c(), status.at(row.expect)) << linattn_last_error();
  const std::string message = linattn_last_error();
  if (status.at(row.expect) == LINATTN_OK) {
    EXPECT_EQ(message, "");
    expect_outputs(row, call);
  } else {
    EXPECT_NE(message.find(row.message), std::string::npos)
        << "expected a message containing \"" << row.message << "\", got \"" << message << "\"";
  }
}

INSTANTIATE_TEST_SUITE_P(Catalogue, BadInput, ::testing::ValuesIn(catalogue()),
                         [](const auto& info) { return info.param.name; });

// The one alias the catalogue accepts (row final_state_is_initial_state): final_state exactly the
// initial_state view, updating the state in place as a decode loop does. Every form must give
// bit for bit what separate buffers give, with one work item and with several.
TEST(InPlaceState, EveryFormMatchesSeparateBuffers) {
  using namespace linattn;
  for (int i = 0; i < kNumOps; ++i) {
    const Op op = static_cast<Op>(i);
    if (!op_spec(op).causal) continue;
    for (int64_t B : {1, 3}) {
      check::Case c = check::builtin_cases(op).front();
      c.B = B;
      c.T = 150;  // several chunks
      c.initial_state = c.output_final_state = true;
      c.n_h = op_spec(op).takes_num_householder ? 2 : 1;
      const check::Inputs in = check::make_inputs(c, DType::f32);
      for (Form form : {Form::reference, Form::chunk, Form::recurrent}) {
        if (!has_form(op, form, false)) continue;
        const check::Outputs want = check::run_forward(c, in, form);
        check::Buffer state = in.initial_state;  // read, then overwritten with the final state
        OpArgs a = in.args(c);
        a.initial_state = state.view();
        check::Buffer o(DType::f32, want.o.shape());
        forward(op, form, a, {o.view(), state.view()});
        const std::string what = std::string(op_name(op)) + " " + form_name(form);
        EXPECT_EQ(check::rel_error(o, want.o), 0.0) << what;
        EXPECT_EQ(check::rel_error(state, want.final_state), 0.0) << what;
      }
    }
  }
}

// The catalogue itself: enough kinds, unique names, every op of ops.hpp and every call of the
// families with an API of their own (tests/support/families.hpp) in some row (a new op or
// family gets its rows), every API with rows.
TEST(BadInputCatalogue, Coverage) {
  std::set<std::string> names, ops, calls, apis;
  for (const Row& r : catalogue()) {
    EXPECT_TRUE(names.insert(r.name).second) << "duplicate row " << r.name;
    ops.insert(r.op);
    calls.insert(r.op + ":" + r.pass);
    apis.insert(r.apis.begin(), r.apis.end());
  }
  EXPECT_GE(catalogue().size(), 30u);
  for (int i = 0; i < linattn::kNumOps; ++i) {
    const auto op = static_cast<linattn::Op>(i);
    EXPECT_TRUE(ops.count(linattn::op_name(op))) << "no catalogue row for " << linattn::op_name(op);
  }
  for (const std::string& call : linattn_test::family_calls())
    EXPECT_TRUE(calls.count(call)) << "no catalogue row for " << call;
  EXPECT_EQ(apis, (std::set<std::string>{"c", "cpp", "py"}));
}

}  // namespace
