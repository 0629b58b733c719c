#pragma once
/// A minimal streaming JSON writer for the truth file: objects, arrays, strings, numbers (shortest
/// round-trip form, non-finite as null), booleans. The caller is responsible for well-formed nesting;
/// commas are inserted automatically. Not thread-safe.

#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <type_traits>
#include <ostream>
#include <span>
#include <string_view>
#include <vector>

namespace specwatch::sim {

class JsonWriter {
 public:
  explicit JsonWriter(std::ostream& out) : out_(out) {}

  JsonWriter& BeginObject() { Prefix(); out_ << '{'; first_.push_back(true); return *this; }
  JsonWriter& EndObject() { first_.pop_back(); out_ << '}'; return *this; }
  JsonWriter& BeginArray() { Prefix(); out_ << '['; first_.push_back(true); return *this; }
  JsonWriter& EndArray() { first_.pop_back(); out_ << ']'; return *this; }
  /// Object key; the next value call writes its value.
  JsonWriter& Key(std::string_view k) {
    Prefix();
    WriteString(k);
    out_ << ':';
    after_key_ = true;
    return *this;
  }
  JsonWriter& String(std::string_view s) { Prefix(); WriteString(s); return *this; }
  JsonWriter& Bool(bool b) { Prefix(); out_ << (b ? "true" : "false"); return *this; }
  JsonWriter& Null() { Prefix(); out_ << "null"; return *this; }
  JsonWriter& Number(double v) {
    Prefix();
    if (!std::isfinite(v)) {
      out_ << "null";
      return *this;
    }
    char buf[32];
    auto [p, ec] = std::to_chars(buf, buf + sizeof buf, v);
    out_.write(buf, p - buf);
    return *this;
  }
  JsonWriter& Integer(int64_t v) {
    Prefix();
    char buf[24];
    auto [p, ec] = std::to_chars(buf, buf + sizeof buf, v);
    out_.write(buf, p - buf);
    return *this;
  }
  template <typename T>
  JsonWriter& NumberArray(std::span<const T> values) {
    BeginArray();
    for (const T& v : values) {
      if constexpr (std::is_integral_v<T>) Integer(static_cast<int64_t>(v));
      else Number(static_cast<double>(v));
    }
    return EndArray();
  }
  template <typename T>
  JsonWriter& NumberArray(const std::vector<T>& values) { return NumberArray(std::span<const T>(values)); }

 private:
  void Prefix() {
    if (after_key_) {
      after_key_ = false;
      return;
    }
    if (!first_.empty()) {
      if (!first_.back()) out_ << ',';
      first_.back() = false;
    }
  }
  void WriteString(std::string_view s) {
    out_ << '"';
    for (char c : s) {
      switch (c) {
        case '"': out_ << "\\\""; break;
        case '\\': out_ << "\\\\"; break;
        case '\n': out_ << "\\n"; break;
        case '\t': out_ << "\\t"; break;
        case '\r': out_ << "\\r"; break;
        default:
          if (static_cast<unsigned char>(c) < 0x20) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\u%04x", c);
            out_ << buf;
          } else {
            out_ << c;
          }
      }
    }
    out_ << '"';
  }
  std::ostream& out_;
  std::vector<bool> first_;
  bool after_key_ = false;
};

}  // namespace specwatch::sim
