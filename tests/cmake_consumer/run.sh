#!/usr/bin/env bash
# Checks the installed CMake package: installs the `dev` component of a linattn build tree to a
# temporary prefix, builds tests/cmake_consumer against it with find_package(linattn) and runs
# the result. Exit code 0 on success.
#
# Usage: run.sh <linattn build dir> [extra cmake configure args for the consumer, e.g. compilers]
set -euo pipefail

build_dir=$(cd "${1:?usage: run.sh <linattn build dir> [cmake args...]}" && pwd)
shift
source_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/linattn_consumer.XXXXXX")
trap 'rm -rf "$work"' EXIT

cmake --install "$build_dir" --prefix "$work/prefix" --component dev
# Only the prefix: the consumer must not pick up the build tree or the source headers.
cmake -S "$source_dir" -B "$work/build" -DCMAKE_PREFIX_PATH="$work/prefix" \
  -DCMAKE_BUILD_TYPE=Release "$@"
cmake --build "$work/build"
"$work/build/linattn_consumer"
