#include "operators/core/config_error.hpp"
#include "operators/model/incremental_svd.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <string>

namespace specwatch {
namespace {

/// Message of the ConfigError thrown by Validate, or "" if it passes.
std::string Rejection(const SubspaceOptions& options, int channels = 2048) {
  try {
    options.Validate(channels);
  } catch (const ConfigError& error) {
    return error.what();
  }
  return "";
}

SubspaceOptions With(const std::function<void(SubspaceOptions&)>& change) {
  SubspaceOptions options;
  change(options);
  return options;
}

TEST_CASE("SubspaceOptions: defaults and boundary values are valid") {
  CHECK(Rejection(SubspaceOptions{}) == "");
  CHECK(Rejection(With([](auto& o) { o.forgetting = 1.0; })) == "");
  CHECK(Rejection(With([](auto& o) { o.forgetting = 1e-9; })) == "");
  CHECK(Rejection(With([](auto& o) { o.oversample = 0; })) == "");
  CHECK(Rejection(With([](auto& o) { o.rank = 16; o.oversample = 16; }), 32) == "");
  CHECK(Rejection(With([](auto& o) { o.block = 1; o.reorthonormalize_every = 1; })) == "");
}

TEST_CASE("SubspaceOptions: Validate rejects bad values with a message naming the field") {
  CHECK(Rejection(With([](auto& o) { o.forgetting = 1.5; })) == "forgetting must be in (0, 1], got 1.5");
  CHECK(Rejection(With([](auto& o) { o.forgetting = 0.0; })) == "forgetting must be in (0, 1], got 0");
  CHECK(Rejection(With([](auto& o) { o.forgetting = -0.5; })).starts_with("forgetting must be in (0, 1]"));
  CHECK(Rejection(With([](auto& o) { o.forgetting = std::nan(""); })).starts_with("forgetting "));
  CHECK(Rejection(With([](auto& o) { o.rank = 0; })) == "rank must be >= 1, got 0");
  CHECK(Rejection(With([](auto& o) { o.oversample = -1; })) == "oversample must be >= 0, got -1");
  CHECK(Rejection(With([](auto& o) { o.block = 0; })) == "block must be >= 1, got 0");
  CHECK(Rejection(With([](auto& o) { o.reorthonormalize_every = 0; })) ==
        "reorthonormalize_every must be >= 1, got 0");
  CHECK(Rejection(With([](auto& o) { o.rank = 20; o.oversample = 16; }), 32) ==
        "rank rank + oversample (36) must be <= the channel count (32)");
  CHECK(Rejection(With([](auto& o) { o.rank = std::numeric_limits<int>::max(); })).starts_with("rank rank + "));
  // The channel check is a question about the data, asked without throwing.
  CHECK(With([](auto& o) { o.rank = 20; o.oversample = 16; }).ChannelProblem(32) ==
        "rank + oversample (36) must be <= the channel count (32)");
  CHECK(SubspaceOptions{}.ChannelProblem(32).empty());
  CHECK(Rejection(SubspaceOptions{}, 0).find("channel") != std::string::npos);
}

TEST_CASE("IncrementalSvd: the constructor validates its options") {
  SubspaceOptions options;
  options.block = -3;
  CHECK_THROWS_WITH_AS(IncrementalSvd(64, options), "block must be >= 1, got -3", ConfigError);
  CHECK_NOTHROW(IncrementalSvd(64, SubspaceOptions{}));
}

}  // namespace
}  // namespace specwatch
