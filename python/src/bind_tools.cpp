// Bindings of the tools behind the CLI: the check runner, the peak-FMA probe and the thread
// count. The numeric work (every check, every measurement) stays in C++.
#include <nanobind/nanobind.h>
#include <nanobind/stl/function.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <omp.h>

#include "check/harness.hpp"
#include "linattn/bench.hpp"
#include "linattn/error.hpp"
#include "linattn/ops.hpp"

namespace nb = nanobind;

namespace {

linattn::DType dtype_from_name(const std::string& name) {
  for (auto d : {linattn::DType::f32, linattn::DType::bf16, linattn::DType::f64})
    if (name == linattn::dtype_name(d)) return d;
  linattn::fail("unknown dtype '", name, "'; expected float32, bfloat16 or float64");
}

}  // namespace

void bind_tools(nb::module_& m) {
  m.def(
      "check_run",
      [](const std::vector<std::string>& ops, const std::string& dtype,
         const std::function<void(size_t, size_t)>& progress) {
        const linattn::DType d = dtype_from_name(dtype);
        std::vector<linattn::check::Row> rows;
        {
          // Progress calls back into Python, so only the C++ work between calls drops the GIL.
          nb::gil_scoped_release release;
          rows = linattn::check::run(ops, d, [&](size_t done, size_t total) {
            if (!progress) return;
            nb::gil_scoped_acquire acquire;
            progress(done, total);
          });
        }
        nb::list out;
        for (const auto& r : rows) {
          nb::dict row;
          row["op"] = r.op;
          row["form"] = r.form;
          row["dtype"] = r.dtype;
          row["shape"] = r.shape;
          row["check"] = r.check;
          row["error"] = r.error;
          row["tolerance"] = r.tolerance;
          row["pass"] = r.pass;
          out.append(row);
        }
        return out;
      },
      nb::arg("ops"), nb::arg("dtype"), nb::arg("progress").none() = nb::none(),
      "Runs every check of every implemented form of `ops` (names from check_names()) on the built-in random cases with "
      "inputs stored as `dtype`; returns one dict per row.");
  m.def("check_names", &linattn::check::check_names,
        "Every op name `check` takes: the ops of op_names(), then those with an API of their own.");
  m.def("peak_fma_gflops", &linattn::peak_fma_gflops, nb::arg("threads"), nb::arg("seconds") = 0.2,
        nb::call_guard<nb::gil_scoped_release>(),
        "Measured fp32 FMA GFLOP/s over `threads` threads (the % of peak reference).");
  m.def("simd_target", &linattn::simd_target_name, "The SIMD target Highway picked at run time.");
  m.def("set_num_threads", [](int n) {
    if (n < 1) linattn::fail("set_num_threads: threads must be >= 1, got ", n);
    omp_set_num_threads(n);
  }, nb::arg("threads"), "Sets the number of OpenMP threads linattn uses.");
  m.def("get_num_threads", [] { return omp_get_max_threads(); },
        "The number of OpenMP threads linattn uses.");
}
