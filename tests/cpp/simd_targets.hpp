// Tests of the SIMD kernels run once per target that this CPU supports and the library was
// compiled for (e.g. SSE4, AVX2, AVX3, AVX3_DL on an Ice Lake), not only the best one: Highway's
// hwy::TestWithParamTarget restricts the supported targets to the test's parameter
// (hwy::SetSupportedTargetsForTest), so every HWY_DYNAMIC_DISPATCH in the library picks that
// target. A suite is a fixture deriving from PerTarget plus HWY_TARGET_INSTANTIATE_TEST_SUITE_P.
#pragma once

#include <hwy/highway.h>
#include <hwy/tests/hwy_gtest.h>

#include "linattn/bench.hpp"

namespace linattn {

class PerTarget : public hwy::TestWithParamTarget {
 protected:
  void SetUp() override {
    hwy::TestWithParamTarget::SetUp();
    // The library dispatches to the target under test (not to a cached earlier choice).
    ASSERT_STREQ(simd_target_name(), hwy::TargetName(GetParam()));
  }
};

}  // namespace linattn
