// Binding of softmax attention (include/linattn/attention.hpp): forward, backward and the decode
// step, each writing caller-allocated outputs in place (python/linattn/attention.py allocates
// them). No numeric work here: views, then C++ with the GIL released.
#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>

#include <cmath>
#include <optional>
#include <string>

#include "views.hpp"
#include "linattn/attention.hpp"

namespace nb = nanobind;
using namespace linattn_py;

namespace {

constexpr const char* kName = "parallel_attn";

linattn::AttentionArgs attention_args(const Input& q, const Input& k, const Input& v,
                                      const OptInput& cu_seqlens, std::optional<double> scale,
                                      int64_t window_size) {
  linattn::AttentionArgs a;
  a.q = view(kName, "q", q);
  a.k = view(kName, "k", k);
  a.v = view(kName, "v", v);
  a.cu_seqlens = view(kName, "cu_seqlens", cu_seqlens);
  a.scale = scale ? *scale : NAN;
  a.window_size = window_size;
  return a;
}

}  // namespace

void bind_attention(nb::module_& m) {
  m.def(
      "attention_forward",
      [](const std::string& form, const Input& q, const Input& k, const Input& v,
         const OptInput& cu_seqlens, std::optional<double> scale, int64_t window_size,
         const Output& o, const OptOutput& lse) {
        const linattn::AttentionArgs a = attention_args(q, k, v, cu_seqlens, scale, window_size);
        const linattn::AttentionOutputs out{view(kName, "o", o), view(kName, "lse", lse)};
        const linattn::Form f = linattn::form_from_name(form);
        nb::gil_scoped_release no_gil;
        linattn::attention_forward(f, a, out);
      },
      nb::arg("form"), nb::arg("q"), nb::arg("k"), nb::arg("v"),
      nb::arg("cu_seqlens").none() = nb::none(), nb::arg("scale").none() = nb::none(),
      nb::arg("window_size") = 0, nb::kw_only(), nb::arg("o"), nb::arg("lse").none() = nb::none(),
      "Softmax attention forward ('reference' or 'chunk'): writes o [B, T, H, V] and, if given, "
      "lse [B, T, H] in place.");
  m.def(
      "attention_backward",
      [](const std::string& form, const Input& q, const Input& k, const Input& v,
         const OptInput& cu_seqlens, std::optional<double> scale, int64_t window_size,
         const OptInput& o, const OptInput& lse, const Input& d_o, const OptOutput& dq,
         const OptOutput& dk, const OptOutput& dv) {
        const linattn::AttentionArgs a = attention_args(q, k, v, cu_seqlens, scale, window_size);
        const linattn::TensorView o_view = view(kName, "o", o), lse_view = view(kName, "lse", lse),
                                  do_view = view(kName, "do", d_o);
        const linattn::AttentionGrads grads{view(kName, "dq", dq), view(kName, "dk", dk),
                                            view(kName, "dv", dv)};
        const linattn::Form f = linattn::form_from_name(form);
        nb::gil_scoped_release no_gil;
        linattn::attention_backward(f, a, o_view, lse_view, do_view, grads);
      },
      nb::arg("form"), nb::arg("q"), nb::arg("k"), nb::arg("v"),
      nb::arg("cu_seqlens").none() = nb::none(), nb::arg("scale").none() = nb::none(),
      nb::arg("window_size") = 0, nb::kw_only(), nb::arg("o").none() = nb::none(),
      nb::arg("lse").none() = nb::none(), nb::arg("d_o"), nb::arg("dq").none() = nb::none(),
      nb::arg("dk").none() = nb::none(), nb::arg("dv").none() = nb::none(),
      "Softmax attention gradients: writes each given dq, dk, dv in place. The chunk form needs "
      "the forward's o and lse.");
  m.def(
      "attention_decode",
      [](const std::string& form, const Input& q, const Input& k_cache, const Input& v_cache,
         const Input& cache_seqlens, std::optional<double> scale, int64_t window_size,
         const Output& o) {
        constexpr const char* name = "attn_with_kvcache";
        linattn::AttentionCacheArgs a;
        a.q = view(name, "q", q);
        a.k_cache = view(name, "k_cache", k_cache);
        a.v_cache = view(name, "v_cache", v_cache);
        a.cache_seqlens = view(name, "cache_seqlens", cache_seqlens);
        a.scale = scale ? *scale : NAN;
        a.window_size = window_size;
        const linattn::TensorView out = view(name, "o", o);
        const linattn::Form f = linattn::form_from_name(form);
        nb::gil_scoped_release no_gil;
        linattn::attention_decode(f, a, out);
      },
      nb::arg("form"), nb::arg("q"), nb::arg("k_cache"), nb::arg("v_cache"),
      nb::arg("cache_seqlens"), nb::arg("scale").none() = nb::none(), nb::arg("window_size") = 0,
      nb::kw_only(), nb::arg("o"),
      "Decode step against a KV cache ('reference' or 'recurrent'): writes o [N, Tq, H, V].");
}
