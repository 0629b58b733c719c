// tools/common/command_line.hpp: the command-line parsing every tool shares.
#include "tools/common/command_line.hpp"

#include <doctest/doctest.h>

#include <stdexcept>
#include <string>
#include <vector>

namespace specwatch::tools {
namespace {

struct ToolError : std::runtime_error {
  explicit ToolError(const std::string& message) : std::runtime_error(message) {}
};

// A small tool's options: two flags, a number and an integer.
struct Parsed {
  bool json = false;
  bool help = false;
  double rate = 0;
  int64_t count = -1;
  std::vector<std::string> order;  // the actions, in the order they ran
};

Parsed Parse(std::vector<std::string> args) {
  Parsed p;
  const FlagActions flags = {
      {"--json", [&] { p.json = true; p.order.push_back("json"); }},
      {"-h", [&] { p.help = true; p.order.push_back("help"); }},
  };
  const ValueActions values = {
      {"--rate",
       [&](auto& n, auto& v) {
         p.rate = ParseNumber<ToolError>(n, v, 0.0, 1e6);
         p.order.push_back("rate");
       }},
      {"--count",
       [&](auto& n, auto& v) {
         p.count = ParseInteger<ToolError>(n, v, 0, 100);
         p.order.push_back("count");
       }},
  };
  ParseCommandLine<ToolError>(args, flags, values);
  return p;
}

std::string Rejection(std::vector<std::string> args) {
  try {
    Parse(std::move(args));
  } catch (const ToolError& e) {
    return e.what();
  }
  return "(accepted)";
}

TEST_CASE("flags and valued options, with the value apart or after '=', run in order") {
  const Parsed p = Parse({"--rate", "2.5e3", "--json", "--count=7", "-h"});
  CHECK(p.json);
  CHECK(p.help);
  CHECK(p.rate == 2500.0);
  CHECK(p.count == 7);
  CHECK(p.order == std::vector<std::string>{"rate", "json", "count", "help"});
  // A later value wins.
  CHECK(Parse({"--count", "3", "--count", "4"}).count == 4);
  CHECK(Parse({}).order.empty());
}

TEST_CASE("a bad command line is the tool's error, naming the option") {
  CHECK(Rejection({"--bogus"}) == "unknown option '--bogus' (see --help)");
  CHECK(Rejection({"--bogus=1"}) == "unknown option '--bogus=1' (see --help)");
  CHECK(Rejection({"--rate"}) == "--rate: missing value");
  CHECK(Rejection({"--json=yes"}) == "--json: takes no value");
  CHECK(Rejection({"rate", "3"}) == "unknown option 'rate' (see --help)");
}

TEST_CASE("numbers are parsed whole, finite and within their range") {
  CHECK(Rejection({"--rate", "12abc"}) == "--rate: '12abc' is not a number");
  CHECK(Rejection({"--rate", ""}) == "--rate: '' is not a number");
  CHECK(Rejection({"--rate", "nan"}) == "--rate: 'nan' is not a number");
  CHECK(Rejection({"--rate", "inf"}) == "--rate: 'inf' is not a number");
  CHECK(Rejection({"--rate", "-1"}) == "--rate: -1 is outside [0, 1000000]");
  CHECK(Rejection({"--count", "2.5"}) == "--count: '2.5' is not an integer");
  CHECK(Rejection({"--count", "101"}) == "--count: 101 is outside 0..100");
  CHECK(Rejection({"--count=-1"}) == "--count: -1 is outside 0..100");
  CHECK(Rejection({"--count", "99999999999999999999"}) == "--count: '99999999999999999999' is not an integer");
}

TEST_CASE("unsigned integers reject a sign, and take the whole range by default") {
  CHECK(ParseInteger<ToolError, uint64_t>("--seed", "18446744073709551615") == 18446744073709551615ull);
  CHECK_THROWS_WITH_AS((ParseInteger<ToolError, uint64_t>("--seed", "-3")),
                       "--seed: '-3' is not a non-negative integer", ToolError);
  CHECK(ParseNumber<ToolError>("--x", "-1e300") == -1e300);
}

}  // namespace
}  // namespace specwatch::tools
