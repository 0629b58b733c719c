#include "stream/recording.hpp"

#include <stdexcept>

namespace specwatch::stream {
namespace {

// Every message the service publishes stays far below this; a larger size means the bytes are not a
// recording (and must not become an allocation).
constexpr uint64_t kMaxPartBytes = uint64_t{4} << 30;
constexpr uint32_t kMaxParts = 16;

template <typename T>
bool ReadLittleEndian(std::istream& in, T* value) {
  unsigned char bytes[sizeof(T)];
  if (!in.read(reinterpret_cast<char*>(bytes), sizeof bytes)) return false;
  T v = 0;
  for (size_t i = 0; i < sizeof(T); ++i) v |= static_cast<T>(bytes[i]) << (8 * i);
  *value = v;
  return true;
}

template <typename T>
void WriteLittleEndian(std::ostream& out, T value) {
  unsigned char bytes[sizeof(T)];
  for (size_t i = 0; i < sizeof(T); ++i) bytes[i] = static_cast<unsigned char>(value >> (8 * i));
  out.write(reinterpret_cast<const char*>(bytes), sizeof bytes);
}

}  // namespace

void WriteRecord(std::ostream& out, std::span<const std::string_view> parts) {
  WriteLittleEndian<uint32_t>(out, static_cast<uint32_t>(parts.size()));
  for (const auto& p : parts) {
    WriteLittleEndian<uint64_t>(out, p.size());
    out.write(p.data(), static_cast<std::streamsize>(p.size()));
  }
}

std::optional<std::vector<std::string>> RecordReader::Next(std::string_view topic) {
  while (true) {
    uint32_t count = 0;
    if (!ReadLittleEndian(in_, &count)) {
      if (in_.gcount() == 0) return std::nullopt;  // a clean end between messages
      throw std::runtime_error("recording ends inside a message header");
    }
    if (count == 0 || count > kMaxParts) {
      throw std::runtime_error("not a recording: a message of " + std::to_string(count) + " parts");
    }
    std::vector<std::string> parts;
    for (uint32_t i = 0; i < count; ++i) {
      uint64_t size = 0;
      if (!ReadLittleEndian(in_, &size)) throw std::runtime_error("recording ends inside a message");
      if (size > kMaxPartBytes) {
        throw std::runtime_error("not a recording: a part of " + std::to_string(size) + " bytes");
      }
      const bool skip = i > 0 && !topic.empty() && parts[0] != topic;
      if (skip) {
        in_.seekg(static_cast<std::streamoff>(size), std::ios::cur);
        if (!in_) throw std::runtime_error("recording ends inside a message");
        continue;
      }
      std::string part(size, '\0');
      if (!in_.read(part.data(), static_cast<std::streamsize>(size))) {
        throw std::runtime_error("recording ends inside a message");
      }
      parts.push_back(std::move(part));
    }
    if (topic.empty() || parts[0] == topic) return parts;
  }
}

}  // namespace specwatch::stream
