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
#include "support/view_memory.hpp"

namespace {

using linattn_test::element_size;
using linattn_test::load_element;
using linattn_test::span_elements;
using linattn_test::store_element;
using linattn_test::strided_offset;

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

const char* const kTensorNames[] = {"q",  "k",  "v",  "g",  "gk", "beta", "initial_state",
                                    "cu_seqlens", "o", "final_state", "do", "dfinal_state",
                                    "dq", "dk", "dv", "dg", "dgk", "dbeta", "dinitial_state"};
constexpr int kTensors = 19;
enum Slot { q, k, v, g, gk, beta, h0, cu, o, ht, d_o, dht, dq };  // gradients follow dq in order

int slot_of(const std::string& name) {
  for (int i = 0; i < kTensors; ++i)
    if (name == kTensorNames[i]) return i;
  throw std::runtime_error("catalogue: unknown tensor " + name);
}

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

// One row's call: the base problem with the row's edits, the memory behind every view, and
// the C arguments (the C++ ones are converted from them).
class Call {
 public:
  static constexpr int64_t H = 2, HV = 4, K = 4, V = 3;

  explicit Call(const Row& row) : row_(row) {
    op_ = linattn::op_from_name(row.op);
    op_id_ = static_cast<int32_t>(op_);
    form_id_ = static_cast<int32_t>(linattn::form_from_name(row.form));
    for (const auto& e : row.edits) {  // layout first: the base depends on it
      if (e[0] == "batch") B_ = std::stol(e.at(1)), T_ = std::stol(e.at(2));
      if (e[0] == "cu") {
        for (const std::string& x : split(e.at(1), ',')) offsets_.push_back(std::stol(x));
      }
    }
    build_base();
    for (const auto& e : row.edits) edit(e);
    materialise();
  }
  Call(const Call&) = delete;

  // The C API: returns the status; the message is linattn_last_error().
  linattn_status run_c() {
    linattn_args a;
    linattn_args_init(&a);
    a.q = views_[q]; a.k = views_[k]; a.v = views_[v]; a.g = views_[g]; a.gk = views_[gk];
    a.beta = views_[beta]; a.initial_state = views_[h0]; a.cu_seqlens = views_[cu];
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
      return linattn_forward(op, form, args, null_args_.count("o") ? nullptr : &views_[o],
                             &views_[ht]);
    linattn_grads grads{views_[dq], views_[dq + 1], views_[dq + 2], views_[dq + 3],
                        views_[dq + 4], views_[dq + 5], views_[dq + 6]};
    return linattn_backward(op, form, args, null_args_.count("d_o") ? nullptr : &views_[d_o],
                            &views_[dht], null_args_.count("grads") ? nullptr : &grads);
  }

  // The C++ API: throws what it throws.
  void run_cpp() {
    linattn::OpArgs a;
    a.q = cpp(q); a.k = cpp(k); a.v = cpp(v); a.g = cpp(g); a.gk = cpp(gk); a.beta = cpp(beta);
    a.initial_state = cpp(h0); a.cu_seqlens = cpp(cu);
    a.scale = scale_;
    a.output_final_state = output_final_state_;
    a.normalize = normalize_;
    a.use_qk_l2norm_in_kernel = l2norm_;
    a.num_householder = num_householder_;
    const auto form = static_cast<linattn::Form>(form_id_);
    if (row_.pass == "shapes") {
      linattn::output_shapes(op_, a);
    } else if (row_.pass == "forward") {
      linattn::forward(op_, form, a, {cpp(o), cpp(ht)});
    } else {
      linattn::backward(op_, form, a, {cpp(d_o), cpp(dht)},
                        {cpp(dq), cpp(dq + 1), cpp(dq + 2), cpp(dq + 3), cpp(dq + 4),
                         cpp(dq + 5), cpp(dq + 6)});
    }
  }

  // Whether every written output is finite / some output holds a NaN or Inf.
  bool outputs_finite(bool* any_non_finite) const {
    bool all = true;
    *any_non_finite = false;
    for (int s = o; s < kTensors; ++s) {
      if (s == d_o || s == dht || views_[s].ndim == 0) continue;
      int64_t lowest = 0;
      const int64_t n = span_elements(views_[s], &lowest);
      for (int64_t e = 0; e < n; ++e) {
        const bool finite = std::isfinite(load_element(views_[s].data, views_[s].dtype, e));
        all = all && finite;
        *any_non_finite = *any_non_finite || !finite;
      }
    }
    return all;
  }

 private:
  void set(int slot, std::vector<int64_t> shape, int32_t dtype = LINATTN_DTYPE_F32) {
    natural_[slot] = contiguous(dtype, static_cast<int32_t>(shape.size()), shape.data());
    views_[slot] = natural_[slot];
  }

  void build_base() {
    const linattn::OpSpec& spec = linattn::op_spec(op_);
    if (spec.takes_num_householder) num_householder_ = 2;
    const int64_t TK = T_ * num_householder_;
    const int64_t N = offsets_.empty() ? B_ : static_cast<int64_t>(offsets_.size()) - 1;
    const bool backward = row_.pass == "backward";
    set(q, {B_, T_, H, K});
    set(k, {B_, TK, H, K});
    set(v, {B_, TK, HV, V});
    set(g, {B_, T_, HV});
    set(gk, {B_, T_, HV, K});
    set(beta, {B_, TK, HV});
    set(h0, {N, HV, K, V});
    set(cu, {static_cast<int64_t>(offsets_.size())}, LINATTN_DTYPE_I64);
    set(o, {B_, T_, HV, V});
    set(ht, {N, HV, K, V});
    set(d_o, {B_, T_, HV, V});
    set(dht, {N, HV, K, V});
    for (int input = q; input <= h0; ++input) natural_[dq + input] = natural_[input];
    // Given in the base: what the op takes.
    const bool given[kTensors] = {
        true, true, true, spec.takes_g, spec.takes_gk, spec.takes_beta, spec.causal,
        !offsets_.empty(), true, spec.causal, backward, backward && spec.causal};
    for (int s = 0; s < kTensors; ++s) {
      const bool on = s < dq ? given[s] : backward && given[s - dq];
      views_[s] = on ? natural_[s] : linattn_tensor{};
    }
    if (row_.pass != "forward") views_[o] = views_[ht] = linattn_tensor{};
    output_final_state_ = spec.causal;
  }

  void restride(linattn_tensor& t) {
    if (t.ndim >= 0 && t.ndim <= LINATTN_MAX_DIMS) t = contiguous(t.dtype, t.ndim, t.shape);
  }

  void edit(const std::vector<std::string>& e) {
    const std::string& cmd = e[0];
    if (cmd == "batch" || cmd == "cu") return;  // applied by the constructor
    if (cmd == "set") {
      const std::string& flag = e.at(1);
      const double x = number(e.at(2));
      if (flag == "normalize") normalize_ = x != 0;
      else if (flag == "l2norm") l2norm_ = x != 0;
      else if (flag == "num_householder") num_householder_ = static_cast<int32_t>(x);
      else if (flag == "scale") scale_ = x;
      else if (flag == "output_final_state") output_final_state_ = x != 0;
      else throw std::runtime_error("catalogue: unknown flag " + flag);
      return;
    }
    if (cmd == "nullarg") { null_args_.insert(e.at(1)); return; }
    if (cmd == "opid") { op_id_ = std::stoi(e.at(1)); return; }
    if (cmd == "formid") { form_id_ = std::stoi(e.at(1)); return; }
    const int s = slot_of(e.at(1));
    linattn_tensor& t = views_[s];
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
      t = natural_[s];
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

  // Allocates and fills the memory of every view: inputs get values in their documented
  // ranges, outputs NaN (a finite result then proves it was written), cu_seqlens the offsets.
  void materialise() {
    std::mt19937 rng(7);
    std::uniform_real_distribution<double> unit(0.0, 1.0);
    for (int s = 0; s < kTensors; ++s) {
      linattn_tensor& t = views_[s];
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
      for (int64_t i = 0; i < n; ++i) {
        double x = 2.0 * unit(rng) - 1.0;
        if (s == g || s == gk) x = -0.01 - unit(rng);  // log decays in [-1.01, -0.01]
        if (s == beta) x = 0.1 + 0.9 * unit(rng);
        if (s == cu) x = static_cast<double>(offsets_.at(i));
        if (s >= o && s != d_o && s != dht) x = NAN;
        store_element(t.data, t.dtype, strided_offset(t, i), x);
      }
    }
    for (const auto& [s, i, x] : values_) store_element(views_[s].data, views_[s].dtype, strided_offset(views_[s], i), x);
    for (int s = 0; s < kTensors; ++s) {
      if (alias_[s] >= 0) views_[s].data = views_[alias_[s]].data;
      if (null_[s]) views_[s].data = nullptr;
    }
  }

  linattn::TensorView cpp(int s) const {
    const linattn_tensor& t = views_[s];
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

  const Row& row_;
  linattn::Op op_;
  int32_t op_id_, form_id_;
  int64_t B_ = 2, T_ = 5;
  std::vector<int64_t> offsets_;
  linattn_tensor views_[kTensors]{}, natural_[kTensors]{};
  std::vector<double> storage_[kTensors];
  bool null_[kTensors]{}, misalign_[kTensors]{};
  int alias_[kTensors] = {-1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                          -1, -1, -1, -1, -1, -1, -1, -1, -1};
  std::vector<std::tuple<int, int64_t, double>> values_;
  std::set<std::string> null_args_;
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

// The catalogue itself: enough kinds, unique names, every op of ops.hpp in some row (a new op
// gets its rows), every API with rows.
TEST(BadInputCatalogue, Coverage) {
  std::set<std::string> names, ops, apis;
  for (const Row& r : catalogue()) {
    EXPECT_TRUE(names.insert(r.name).second) << "duplicate row " << r.name;
    ops.insert(r.op);
    apis.insert(r.apis.begin(), r.apis.end());
  }
  EXPECT_GE(catalogue().size(), 30u);
  for (int i = 0; i < linattn::kNumOps; ++i) {
    const auto op = static_cast<linattn::Op>(i);
    // dplr_delta_rule's a and b are not in the drivers' tensor vocabulary yet: its bad inputs
    // are tested in dplr_test.cpp and test_errors.py (docs/reliability.md).
    if (linattn::op_spec(op).takes_ab) continue;
    EXPECT_TRUE(ops.count(linattn::op_name(op))) << "no catalogue row for " << linattn::op_name(op);
  }
  EXPECT_EQ(apis, (std::set<std::string>{"c", "cpp", "py"}));
}

}  // namespace
