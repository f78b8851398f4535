// time_it: warm-up call, then timed calls until both the time and the repetition floors are
// met; reports the median and the minimum (docs/performance.md, "Machine and method").
#include <algorithm>
#include <chrono>
#include <cmath>
#include <vector>

#include "linattn/bench.hpp"
#include "linattn/error.hpp"

namespace linattn {

Timing time_it(const std::function<void()>& fn, double min_seconds, int min_reps) {
  if (!fn) fail("time_it: fn must be a callable, got an empty std::function");
  if (!(min_seconds >= 0.0))
    fail("time_it: min_seconds must be >= 0, got ", min_seconds);
  if (min_reps < 1) fail("time_it: min_reps must be >= 1, got ", min_reps);

  using Clock = std::chrono::steady_clock;
  fn();  // warm-up: first-touch of outputs, caches, scratch arenas, OpenMP team start

  std::vector<double> times;
  times.reserve(static_cast<size_t>(min_reps));
  double total = 0.0;
  while (total < min_seconds || static_cast<int>(times.size()) < min_reps) {
    const auto start = Clock::now();
    fn();
    const double dt = std::chrono::duration<double>(Clock::now() - start).count();
    times.push_back(dt);
    total += dt;
  }

  std::sort(times.begin(), times.end());
  const size_t n = times.size();
  Timing t;
  t.median_s = n % 2 ? times[n / 2] : 0.5 * (times[n / 2 - 1] + times[n / 2]);
  t.min_s = times.front();
  t.reps = static_cast<int>(n);
  return t;
}

}  // namespace linattn
