// linattn::Error: every rejected input throws one, with a message that names the op, the
// argument, what was expected and what was given.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace linattn {

class Error : public std::invalid_argument {
 public:
  explicit Error(const std::string& message) : std::invalid_argument(message) {}
};

// Builds a message from any streamable parts and throws linattn::Error.
template <typename... Parts>
[[noreturn]] void fail(Parts&&... parts) {
  std::ostringstream out;
  (out << ... << std::forward<Parts>(parts));
  throw Error(out.str());
}

}  // namespace linattn
