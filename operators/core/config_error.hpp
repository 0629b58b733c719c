#pragma once
/// The one error type of the configuration plane. Thrown by every options struct's Validate() (and by
/// constructors that validate), caught at the edge and turned into a clear message. The message names the bad
/// field with its config path, e.g. "pca.forgetting must be in (0, 1], got 1.5". Never thrown on the data path.

#include <stdexcept>
#include <string>

namespace specwatch {

struct ConfigError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace specwatch
