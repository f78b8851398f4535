// The time chunks of the fast selective scan and the sweeps over them (chunk.hpp,
// algorithms.md §4.10 (b)).
#include "ops/scan/chunk.hpp"

#include <cmath>

#include "core/parallel.hpp"

namespace linattn::scan {

Chunks::Chunks(const Problem& problem) : p(problem), first(num_items(problem) + 1, 0) {
  const int64_t items = this->items(), per_seq = p.G * blocks_per_group(p);
  span = items < kFewItems ? kSpan : 0;  // 0: one chunk per item
  for (int64_t i = 0; i < items; ++i) {
    const int64_t length = p.sequences[i / per_seq].length;
    first[i + 1] = first[i] + (span > 0 ? std::max<int64_t>(1, (length + span - 1) / span) : 1);
  }
  if (span == 0) span = std::max<int64_t>(p.T, 1);
  if (!split()) return;
  start.resize(pieces() * p.N * kLanes);
  local.resize(pieces() * p.N * kLanes);
  sums.resize(pieces() * kLanes);
}

void run_sweeps(const Chunks& ch, int64_t work, std::initializer_list<Sweep> sweeps) {
  const int64_t items = ch.items();
  if (!ch.split() || work < kParallelWork || items_cover_threads(items)) {
    parallel_for_work(items, work, [&](int64_t item) {
      for (const Sweep& s : sweeps)
        for (int64_t j = 0; j < ch.count(item); ++j) {
          s.chunk(item, j, true, ch.has_local(item, j));
          if (ch.has_local(item, j)) s.carry(item, j);
        }
    });
    return;
  }
  // Chunks differ in cost (chunk 0's true chain, the last one's nothing), hence dynamic.
  auto each_piece = [&](auto&& body) {
    parallel_for<Schedule::dynamic>(ch.pieces(), [&](int64_t piece) {
      const int64_t item = static_cast<int64_t>(std::upper_bound(ch.first.begin(), ch.first.end(), piece) -
                                                ch.first.begin()) - 1;
      body(item, piece - ch.first[item]);
    });
  };
  // Chunks [0, m) of an item run as on one thread, the local chains of the other K - m on
  // q - 1 threads (q threads per item): m ≈ (K - m) local_cost / (q - 1).
  const double q = static_cast<double>(max_threads()) / static_cast<double>(items);
  for (const Sweep& s : sweeps) {
    auto serial_part = [&](int64_t item) {
      const double m = static_cast<double>(ch.count(item)) * s.local_cost / (q - 1.0 + s.local_cost);
      return std::clamp<int64_t>(std::llround(m), 1, ch.count(item));
    };
    each_piece([&](int64_t item, int64_t j) {
      if (j == 0) {
        for (int64_t k = 0; k < serial_part(item); ++k) {
          s.chunk(item, k, true, ch.has_local(item, k));
          if (ch.has_local(item, k)) s.carry(item, k);
        }
      } else if (j >= serial_part(item) && ch.has_local(item, j)) {
        s.chunk(item, j, false, true);
      }
    });
    parallel_for(items, [&](int64_t item) {
      for (int64_t j = std::max<int64_t>(serial_part(item), 1); j + 1 < ch.count(item); ++j) s.carry(item, j);
    });
    each_piece([&](int64_t item, int64_t j) {
      if (j >= serial_part(item)) s.chunk(item, j, true, false);
    });
  }
}

}  // namespace linattn::scan
