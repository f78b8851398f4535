// The families of ops with an API of their own and their `linattn check` jobs (harness.hpp).
// A family adds one line here and defines its jobs function in src/ops/<family>/check.cpp.
#include "check/harness.hpp"
#include "ops/conv1d/check.hpp"
#include "ops/attention/check.hpp"
#include "ops/scan/check.hpp"
#include "ops/lla/check.hpp"

namespace linattn::check {

const std::vector<CheckFamily>& check_families() {
  static const std::vector<CheckFamily> families = {
      {conv1d::kName, conv1d::jobs},
      {"softmax_attention", attention_jobs},
      {scan::kName, scan::jobs},
      {"lla_attention", lla::check::jobs},
  };
  return families;
}

}  // namespace linattn::check
