#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include "operators/config_error.hpp"
#include "server/service_options.hpp"

#include <cstdio>
#include <fstream>

using namespace specwatch;
using namespace specwatch::server;

namespace {
std::string WriteTemp(const std::string& text) {
  char name[] = "/tmp/specwatch_conf_XXXXXX";
  const int fd = mkstemp(name);
  REQUIRE(fd >= 0);
  close(fd);
  std::ofstream(name) << text;
  return name;
}
}  // namespace

TEST_CASE("a config file sets fields over the defaults, and the command line overrides it") {
  const auto path = WriteTemp(
      "frames_endpoint: \">tcp://127.0.0.1:7000\"\n"
      "frames_socket: \"pull\"\n"
      "max_frames_in_flight: 4\n"
      "model_updates: \"all\"\n"
      "denoised_payload: \"scores\"\n"
      "initial_model: \"/var/lib/specwatch/model.snap\"\n"
      "pca { rank: 5 forgetting: 0.999 reset_on_new_series: true }\n");
  const auto cl = ParseCommandLine({"--config", path, "--frames", "@tcp://127.0.0.1:7001", "--rank", "6"});
  CHECK(cl.options.frames_endpoint == "@tcp://127.0.0.1:7001");
  CHECK(cl.options.frames_socket == "pull");
  CHECK(cl.options.max_frames_in_flight == 4);
  CHECK(cl.options.model_updates == ModelUpdates::kAll);
  CHECK(cl.options.denoised_payload == DenoisedPayload::kScores);
  CHECK(cl.options.initial_model == "/var/lib/specwatch/model.snap");
  CHECK(ParseCommandLine({"--config", path, "--initial-model", "m.snap"}).options.initial_model == "m.snap");
  CHECK(cl.options.pca.rank == 6);
  CHECK(cl.options.pca.forgetting == doctest::Approx(0.999));
  CHECK(cl.options.reset_model_on_new_series);
  CHECK(cl.options.publish_endpoint == ServiceOptions{}.publish_endpoint);
  std::remove(path.c_str());
}

TEST_CASE("an unknown key is refused with its name and line") {
  const auto path = WriteTemp("max_frames_in_flight: 4\nframes_endpont: \"x\"\n");
  CHECK_THROWS_WITH_AS(LoadConfigFile(path), doctest::Contains("frames_endpont"), ConfigError);
  CHECK_THROWS_WITH_AS(LoadConfigFile(path), doctest::Contains("line 2"), ConfigError);
  std::remove(path.c_str());
}

TEST_CASE("out-of-range values are refused naming the field") {
  struct Case {
    const char* text;
    const char* names;
  };
  for (const Case c : {Case{"max_frames_in_flight: 0", "max_frames_in_flight"},
                       Case{"frames_socket: \"dealer\"", "frames_socket"},
                       Case{"pca { forgetting: 1.5 }", "forgetting"}, Case{"pca { rank: 0 }", "rank"},
                       Case{"log_level: \"loud\"", "log_level"}, Case{"snapshot_period_s: -1", "snapshot_period_s"},
                       Case{"model_updates: \"sometimes\"", "model_updates"},
                       Case{"denoised_payload: \"float16\"", "denoised_payload"}}) {
    const auto path = WriteTemp(c.text);
    CAPTURE(c.text);
    CHECK_THROWS_WITH_AS(LoadConfigFile(path), doctest::Contains(c.names), ConfigError);
    std::remove(path.c_str());
  }
}

TEST_CASE("the command line refuses unknown flags and bad numbers") {
  CHECK_THROWS_WITH_AS(ParseCommandLine({"--franes", "x"}), doctest::Contains("--franes"), ConfigError);
  CHECK_THROWS_WITH_AS(ParseCommandLine({"--rank", "many"}), doctest::Contains("--rank"), ConfigError);
  CHECK_THROWS_WITH_AS(ParseCommandLine({"--publish"}), doctest::Contains("--publish"), ConfigError);
  CHECK(ParseCommandLine({"--help"}).help);
}

TEST_CASE("the example config in deploy/ is valid") {
  const auto o = LoadConfigFile(std::string(SPECWATCH_SOURCE_DIR) + "/deploy/specwatch.conf");
  CHECK_NOTHROW(o.Validate());
}

TEST_CASE("--help lists every flag and config key") {
  const std::string help = HelpText();
  for (const char* word : {"--config", "--frames", "--publish", "--control", "--metrics", "max_frames_in_flight",
                           "max_message_bytes", "snapshot_period_s", "model_updates", "forgetting",
                           "warmup_spectra", "receive_buffer_frames", "log_rate_limit_per_s", "denoised_payload",
                           "--denoised-payload", "initial_model", "--initial-model"}) {
    CAPTURE(word);
    CHECK(help.find(word) != std::string::npos);
  }
}
