#pragma once
/// specwatch-tap's recording format (tools/tap/README.md), also the format of model snapshot files
/// (proto/README.md 3.9): messages one after the other, each
///
///   uint32 part_count, then part_count x { uint64 size; size bytes }      (little-endian)
///
/// Part 0 is the topic, part 1 the Envelope, part 2 (if present) the raw payload.
/// Not thread-safe: one writer or reader per stream.

#include <cstdint>
#include <istream>
#include <optional>
#include <ostream>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace specwatch::stream {

/// Appends one message. The caller checks the stream's state.
void WriteRecord(std::ostream& out, std::span<const std::string_view> parts);

class RecordReader {
 public:
  explicit RecordReader(std::istream& in) : in_(in) {}
  /// The next message whose topic (part 0) is `topic` (any topic when empty); others are skipped without
  /// reading their parts into memory. nullopt at the end of the stream. Throws std::runtime_error when the
  /// stream ends inside a message or a size is implausible (not a recording).
  std::optional<std::vector<std::string>> Next(std::string_view topic = {});

 private:
  std::istream& in_;
};

}  // namespace specwatch::stream
