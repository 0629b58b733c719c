#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include "operators/core/config_error.hpp"
#include "server/config_keys.hpp"
#include "server/service_options.hpp"

#include "config.pb.h"

#include <algorithm>
#include <cstdio>
#include <vector>
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

TEST_CASE("the novelty and drift sections reach the monitor's options; flags override them") {
  const auto path = WriteTemp(
      "novelty { enabled: true false_alarm_rate: 1e-5 calibration_spectra: 5000 hotelling: false\n"
      "          regime_window_spectra: 1000 regime_fraction: 0.1 absorb_spectra: 2000 contributions: 4\n"
      "          max_regions: 16 }\n"
      "drift { energy: true energy_correction: \"on\" energy_block_spectra: 256\n"
      "        energy_min_shift_channels: 0.3 subspace: false subspace_threshold_deg: 20 subspace_check_spectra: 512\n"
      "        statistics: false cusum_block_spectra: 128 }\n");
  const ServiceOptions o = LoadConfigFile(path);
  CHECK(o.monitor.novelty);
  CHECK(o.monitor.detector.false_alarm_rate == doctest::Approx(1e-5));
  CHECK(o.monitor.detector.calibration_spectra == 5000);
  CHECK_FALSE(o.monitor.detector.use_hotelling);
  CHECK(o.monitor.detector.regime_window_spectra == 1000);
  CHECK(o.monitor.detector.regime_fraction == doctest::Approx(0.1));
  CHECK(o.monitor.detector.absorb_spectra == 2000);
  CHECK(o.monitor.contributions == 4);
  CHECK(o.monitor.regions.max_regions == 16);
  CHECK(o.monitor.energy_correction == EnergyCorrection::kOn);
  CHECK(o.monitor.energy_shift.block_spectra == 256);
  CHECK(o.monitor.energy_shift.min_shift_channels == doctest::Approx(0.3));
  CHECK_FALSE(o.subspace_drift_enabled);
  CHECK(o.subspace_drift.threshold_deg == doctest::Approx(20));
  CHECK(o.subspace_check_spectra == 512);
  CHECK_FALSE(o.monitor.statistics);
  CHECK(o.monitor.cusum.block_spectra == 128);
  const auto cl = ParseCommandLine({"--config", path, "--false-alarm-rate", "2e-4", "--energy-correction", "off"});
  CHECK(cl.options.monitor.detector.false_alarm_rate == doctest::Approx(2e-4));
  CHECK(cl.options.monitor.energy_correction == EnergyCorrection::kOff);
  CHECK_THROWS_WITH_AS(ParseCommandLine({"--false-alarm-rate", "often"}), doctest::Contains("--false-alarm-rate"),
                       ConfigError);
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
                       Case{"denoised_payload: \"float16\"", "denoised_payload"},
                       Case{"novelty { false_alarm_rate: 0 }", "false_alarm_rate"},
                       Case{"novelty { regime_fraction: 2 }", "regime_fraction"},
                       Case{"drift { energy_correction: \"maybe\" }", "drift.energy_correction"},
                       Case{"drift { subspace_threshold_deg: -1 }", "threshold_deg"},
                       Case{"drift { cusum_block_spectra: 0 }", "block_spectra"}}) {
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
                           "--denoised-payload", "initial_model", "--initial-model", "novelty", "false_alarm_rate",
                           "regime_fraction", "drift", "energy_correction", "subspace_threshold_deg",
                           "cusum_block_spectra", "--false-alarm-rate", "--energy-correction"}) {
    CAPTURE(word);
    CHECK(help.find(word) != std::string::npos);
  }
}

TEST_CASE("the key table covers every field of config.proto, and each key names its options field") {
  const auto* top = config::ServiceConfig::descriptor();
  std::vector<std::string> proto_keys;
  for (int i = 0; i < top->field_count(); ++i) {
    const auto* f = top->field(i);
    if (f->message_type() == nullptr) {
      proto_keys.push_back(f->name());
      continue;
    }
    for (int j = 0; j < f->message_type()->field_count(); ++j) {
      proto_keys.push_back(f->name() + "." + f->message_type()->field(j)->name());
    }
  }
  std::vector<std::string> table_keys;
  for (const ConfigKey& k : ConfigKeys()) table_keys.emplace_back(k.key);
  std::sort(proto_keys.begin(), proto_keys.end());
  std::sort(table_keys.begin(), table_keys.end());
  CHECK(proto_keys == table_keys);
  CHECK(ConfigKeyForField("monitor.guard.sigma")->key == "novelty.guard_sigma");
  CHECK(ConfigKeyForField("weighting_options.floor_fraction")->key == "pca.weight_floor");
  CHECK(ConfigKeyForField("pca.implicit_residual_min_fraction") == nullptr);
}

TEST_CASE("every key's default reads back from the printed defaults; changed options print and read back") {
  ServiceOptions changed;
  changed.pca.rank = 5;
  changed.monitor.guard.sigma = 7.5;
  changed.weighting = Weighting::kNone;
  changed.monitor.energy_correction = EnergyCorrection::kOff;
  changed.damage.max_positions = 99;
  changed.frames_endpoint = "@tcp://127.0.0.1:7100";
  for (const ServiceOptions& o : {ServiceOptions{}, changed}) {
    const std::string text = ConfigText(o);
    const auto path = WriteTemp(text);
    const ServiceOptions back = LoadConfigFile(path);
    CHECK(ConfigText(back) == text);
    for (const ConfigKey& k : ConfigKeys()) {
      CAPTURE(k.key);
      CHECK(k.get(back) == k.get(o));
    }
    std::remove(path.c_str());
  }
  // A default file: every key, once.
  const std::string defaults = ConfigText(ServiceOptions{});
  CHECK(defaults.find("guard_sigma: 25") != std::string::npos);
  CHECK(defaults.find("auto_rank: true") != std::string::npos);
}

TEST_CASE("validation errors name the config key, not the options field; flags name the flag") {
  struct Case {
    const char* text;
    const char* message;
  };
  for (const Case c : {Case{"novelty { guard_sigma: -1 }", "novelty.guard_sigma must be > 0, got -1"},
                       Case{"pca { weight_floor: 2 }", "pca.weight_floor must be in (0, 1], got 2"},
                       Case{"dose { warning_fraction: 1 }", "dose.warning_fraction must be in (0, 1)"},
                       Case{"drift { energy_block_spectra: 0 }", "drift.energy_block_spectra must be >= 1"},
                       Case{"pca { rank: 3000000000 }", "pca.rank must be <= 2147483647"},
                       Case{"novelty { max_regions: 0 }", "novelty.max_regions must be >= 1"}}) {
    const auto path = WriteTemp(c.text);
    CAPTURE(c.text);
    CHECK_THROWS_WITH_AS(LoadConfigFile(path), doctest::Contains(c.message), ConfigError);
    std::remove(path.c_str());
  }
  CHECK_THROWS_WITH_AS(ParseCommandLine({"--false-alarm-rate", "0"}),
                       doctest::Contains("--false-alarm-rate (novelty.false_alarm_rate) must be"), ConfigError);
  CHECK_THROWS_WITH_AS(ParseCommandLine({"--energy-correction", "maybe"}),
                       doctest::Contains("drift.energy_correction): must be one of \"auto\", \"on\", \"off\""),
                       ConfigError);
  CHECK(ParseCommandLine({"--print-defaults"}).print_defaults);
}
