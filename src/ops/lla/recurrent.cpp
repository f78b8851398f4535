// LLA decode (algorithms.md §4.9a): each query alone against its KV cache, a tile of one row
// (chunk.hpp), so the work items are (sequence, head, query) and the products GEMV-shaped.
// For one new token (Tq = 1) this is the per-step cost O(T K) per CG iteration.
#include "ops/lla/chunk.hpp"

namespace linattn::lla {

void recurrent_forward(const Problem& p, const TensorView& o) { tile_forward(p, 1, o); }

}  // namespace linattn::lla
