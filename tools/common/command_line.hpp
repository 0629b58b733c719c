#pragma once
/// Command-line parsing shared by the tools (specwatch-sim, specwatch-bench, specwatch-decompose, specwatch-tap).
///
/// ParseCommandLine walks argv (without the program name) and hands each option to the action the tool
/// registered for it: flags ("--json") and valued options ("--rate 1000" or "--rate=1000"). Numbers are parsed
/// whole, with std::from_chars: "1e3" is a number, "12abc", "" and "nan" are not.
///
/// Each tool keeps its own error type (the one its main catches and prints), passed as the template argument
/// Error: any type constructible from std::string. Messages name the option: "--rate: 'x' is not a number",
/// "unknown option '--bogus' (see --help)", "--rate: missing value", "--json: takes no value".
///
/// Concurrency: plain functions without state.

#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <limits>
#include <map>
#include <span>
#include <string>
#include <type_traits>

namespace specwatch::tools {

/// Options without a value, by name ("--help", "-h").
using FlagActions = std::map<std::string, std::function<void()>>;
/// Options with a value, by name; the action gets the name (for its messages) and the value's text.
using ValueActions = std::map<std::string, std::function<void(const std::string& name, const std::string& value)>>;

/// Runs every argument through `flags` and `values`, in order. Throws Error on an unknown option, a flag given
/// a value ("--json=1"), or a valued option last without one; the actions throw what they throw.
template <typename Error>
void ParseCommandLine(std::span<const std::string> args, const FlagActions& flags, const ValueActions& values) {
  for (size_t i = 0; i < args.size(); ++i) {
    std::string name = args[i];
    std::string value;
    bool inline_value = false;
    if (const auto eq = name.find('='); name.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      inline_value = true;
    }
    if (const auto flag = flags.find(name); flag != flags.end()) {
      if (inline_value) throw Error(name + ": takes no value");
      flag->second();
      continue;
    }
    const auto action = values.find(name);
    if (action == values.end()) throw Error("unknown option '" + args[i] + "' (see --help)");
    if (!inline_value) {
      if (i + 1 >= args.size()) throw Error(name + ": missing value");
      value = args[++i];
    }
    action->second(name, value);
  }
}

/// A finite number in [lo, hi]; Error otherwise.
template <typename Error>
double ParseNumber(const std::string& name, const std::string& text,
                   double lo = -std::numeric_limits<double>::infinity(),
                   double hi = std::numeric_limits<double>::infinity()) {
  double v = 0.0;
  const char* end = text.data() + text.size();
  const auto [p, ec] = std::from_chars(text.data(), end, v);
  if (ec != std::errc() || p != end || !std::isfinite(v)) throw Error(name + ": '" + text + "' is not a number");
  if (v < lo || v > hi) {
    char range[80];
    std::snprintf(range, sizeof range, "[%.17g, %.17g]", lo, hi);
    throw Error(name + ": " + text + " is outside " + range);
  }
  return v;
}

/// A whole number of type Int in lo..hi; Error otherwise (a sign on an unsigned type is an error).
template <typename Error, typename Int = int64_t>
Int ParseInteger(const std::string& name, const std::string& text, Int lo = std::numeric_limits<Int>::min(),
                 Int hi = std::numeric_limits<Int>::max()) {
  static_assert(std::is_integral_v<Int>);
  Int v = 0;
  const char* end = text.data() + text.size();
  const auto [p, ec] = std::from_chars(text.data(), end, v);
  if (ec != std::errc() || p != end) {
    throw Error(name + ": '" + text + "' is not a" + (std::is_unsigned_v<Int> ? " non-negative" : "n") + " integer");
  }
  if (v < lo || v > hi) {
    throw Error(name + ": " + text + " is outside " + std::to_string(lo) + ".." + std::to_string(hi));
  }
  return v;
}

}  // namespace specwatch::tools
