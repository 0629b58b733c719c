#pragma once
/// The ground-truth file (--truth FILE): everything a test needs to judge what the service did with the
/// simulated stream. JSON; the layout is documented in tools/sim/README.md ("Truth file").

#include "tools/sim/simulator.hpp"

#include <ostream>
#include <string>
#include <vector>

namespace specwatch::sim {

/// Writes the truth of `sim` as one JSON object. `command_line` (argv) is recorded verbatim.
void WriteTruthJson(const Simulator& sim, const std::vector<std::string>& command_line, std::ostream& out);
/// Same, to a file (written to FILE.tmp, then renamed). Throws std::runtime_error on I/O failure.
void WriteTruthFile(const Simulator& sim, const std::vector<std::string>& command_line, const std::string& path);

}  // namespace specwatch::sim
