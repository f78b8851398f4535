# Google Highway: one binary with AVX2 / AVX-512 code paths chosen at run time. linattn uses the
# system's (Debian: libhwy-dev) when there is one. Without it, LINATTN_FETCH_HWY (on for pip
# builds, see pyproject.toml) downloads a pinned release and builds it as a static, position-
# independent library inside this build, so that `pip install` needs only a C++20 compiler (plus
# git and network for the download) and the extension does not depend on a libhwy at run time.
set(LINATTN_HWY_VERSION 1.4.0)
set(LINATTN_HWY_COMMIT 2607d3b5b0113992fe84d3848859eae13b3b52c1)

find_package(hwy CONFIG QUIET)
if(hwy_FOUND)
  message(STATUS "Highway ${hwy_VERSION}: ${hwy_DIR}")
  return()
endif()
if(NOT LINATTN_FETCH_HWY)
  message(FATAL_ERROR
    "linattn needs Google Highway (SIMD with run-time dispatch) and CMake found none.\n"
    "Either install it (Debian/Ubuntu: apt-get install libhwy-dev; elsewhere build Highway and "
    "put its install prefix in CMAKE_PREFIX_PATH), or configure with -DLINATTN_FETCH_HWY=ON to "
    "download and build Highway ${LINATTN_HWY_VERSION} here (needs git and network; "
    "`pip install` does this by default).")
endif()

include(FetchContent)
# Only the core library: no tests, examples or contrib library (linattn uses contrib's header-only
# math, which the source tree provides). Install stays on because linattn's CMake export refers
# to the hwy target; pip installs only the "python" component, so none of it reaches a wheel.
set(HWY_ENABLE_TESTS OFF CACHE BOOL "linattn: Highway's tests are not built")
set(HWY_ENABLE_EXAMPLES OFF CACHE BOOL "linattn: Highway's examples are not built")
set(HWY_ENABLE_CONTRIB OFF CACHE BOOL "linattn: Highway's contrib library is not built")
set(HWY_FORCE_STATIC_LIBS ON CACHE BOOL "linattn: Highway is linked into linattn statically")
# The commit of Highway's release tag; a full commit hash pins the content (git verifies it).
FetchContent_Declare(hwy
  GIT_REPOSITORY https://github.com/google/highway.git
  GIT_TAG ${LINATTN_HWY_COMMIT})
message(STATUS "Highway not found on the system: building Highway ${LINATTN_HWY_VERSION} "
  "(commit ${LINATTN_HWY_COMMIT}) from source")
FetchContent_MakeAvailable(hwy)
add_library(hwy::hwy ALIAS hwy)
