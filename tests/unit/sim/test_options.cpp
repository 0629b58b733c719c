// The command line: every option parses into SimOptions, bad values are rejected naming the option.

#include "tools/sim/sim_options.hpp"

#include <doctest/doctest.h>

#include <string>
#include <vector>

using namespace specwatch;
using namespace specwatch::sim;

namespace {
SimOptions Parse(std::vector<std::string> a) { return ParseSimArgs(a); }
}  // namespace

TEST_CASE("A full command line parses") {
  const SimOptions o = Parse({"--modality", "raman", "--channels", "1024", "--scan", "128x32", "--passes", "4",
                              "--rate=0", "--endpoint", ">tcp://127.0.0.1:5555", "--phases", "2", "--counts", "5e4",
                              "--inclusion", "0.002", "--seed", "42", "--truth", "/tmp/t.json", "--frame-spectra", "1",
                              "--socket", "push", "--payload", "float32", "--readout-noise", "2.5", "--series-id", "run7",
                              "--start-delay-s", "0", "--no-series-start", "--energy-drift", "-1.5",
                              "--energy-drift-start", "1000", "--energy-drift-ramp=0", "--grow-phase",
                              "--critical-dose", "1e4", "--beam-current-pA", "30", "--dwell-us", "100", "--pixel-A", "0.5",
                              "--threads", "2", "--queue-frames", "64", "--pregenerate", "--hwm", "5000",
                              "--energy-offset", "200", "--dispersion", "1.5"});
  CHECK(o.modality == Modality::kRaman);
  CHECK(o.channels == 1024);
  CHECK(o.scan_width == 128);
  CHECK(o.scan_height == 32);
  CHECK(o.passes == 4);
  CHECK(o.rate_spectra_per_s == 0.0);
  CHECK(o.endpoint == ">tcp://127.0.0.1:5555");
  CHECK(o.phases == 2);
  CHECK(o.mean_counts == 5e4);
  CHECK(o.inclusion_fraction == 0.002);
  CHECK(o.seed == 42);
  CHECK(o.truth_path == "/tmp/t.json");
  CHECK(o.FrameSpectra() == 1);
  CHECK(o.socket == SocketKind::kPush);
  CHECK(o.payload == PayloadKind::kFloat32);
  CHECK(o.readout_noise_counts == 2.5);
  CHECK(o.SeriesId() == "run7");
  CHECK(o.start_delay_s == 0.0);
  CHECK_FALSE(o.send_series_start);
  CHECK(o.energy_drift_channels == -1.5);
  CHECK(o.energy_drift_start_spectrum == 1000);
  CHECK(o.energy_drift_ramp_spectra == 0);
  CHECK(o.grow_phase);
  CHECK(o.critical_dose_e_per_A2 == 1e4);
  CHECK(o.beam_current_pA == 30.0);
  CHECK(o.DwellUs() == 100.0);
  CHECK(o.pixel_A == 0.5);
  CHECK(o.generator_threads == 2);
  CHECK(o.queue_frames == 64);
  CHECK(o.pregenerate);
  CHECK(o.send_hwm == 5000);
  CHECK(o.energy_offset == 200.0);
  CHECK(o.dispersion == 1.5);
}

TEST_CASE("Defaults that depend on other options") {
  SimOptions o = Parse({"--modality", "eels", "--endpoint", "tcp://127.0.0.1:5555", "--scan", "40x10", "--rate", "2000"});
  CHECK(o.FrameSpectra() == 40);  // one scan line
  CHECK(o.DwellUs() == doctest::Approx(500.0));  // 1/rate
  CHECK(o.SeriesId() == "sim-eels-1");
  CHECK(o.send_series_start);
  CHECK(o.start_delay_s == 0.5);
  CHECK(o.energy_drift_start_spectrum == 0);
  CHECK(o.energy_drift_ramp_spectra == -1);  // to the end of the run
  o = Parse({"--modality", "eds", "--endpoint", "tcp://127.0.0.1:5555", "--rate", "0"});
  CHECK(o.DwellUs() == 10.0);
  bool found = false;
  for (const auto& [k, v] : ResolvedArguments(o)) found |= k == "dwell_us" && v == "10";
  CHECK(found);
}

TEST_CASE("Bad command lines are rejected naming the option") {
  const std::vector<std::string> ok = {"--modality", "xrd", "--endpoint", "tcp://127.0.0.1:5555"};
  auto with = [&](std::vector<std::string> extra) {
    auto a = ok;
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  };
  auto message = [](std::vector<std::string> a) {
    try {
      ParseSimArgs(a);
    } catch (const ConfigError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  CHECK(message({"--endpoint", "tcp://127.0.0.1:5555"}).find("--modality") != std::string::npos);
  CHECK(message({"--modality", "eels"}).find("--endpoint") != std::string::npos);
  CHECK(message(with({"--modality", "xps"})).find("--modality") != std::string::npos);
  CHECK(message(with({"--scan", "64"})).find("--scan") != std::string::npos);
  CHECK(message(with({"--scan", "0x4"})).find("--scan") != std::string::npos);
  CHECK(message(with({"--channels", "8"})).find("--channels") != std::string::npos);
  CHECK(message(with({"--rate", "-1"})).find("--rate") != std::string::npos);
  CHECK(message(with({"--rate", "fast"})).find("--rate") != std::string::npos);
  CHECK(message(with({"--counts", "0"})).find("--counts") != std::string::npos);
  CHECK(message(with({"--counts", "2e9"})).find("--counts") != std::string::npos);
  CHECK(message(with({"--phases", "6"})).find("--phases") != std::string::npos);  // XRD has 5
  const std::vector<std::string> eds6 = {"--modality", "eds", "--endpoint", "tcp://127.0.0.1:5555", "--phases", "6"};
  CHECK(ParseSimArgs(eds6).phases == 6);
  CHECK(message({"--modality", "eds", "--endpoint", "tcp://127.0.0.1:5555", "--phases", "7"}).find("--phases") !=
        std::string::npos);
  CHECK(message(with({"--inclusion", "0.9"})).find("--inclusion") != std::string::npos);
  CHECK(message(with({"--payload", "int8"})).find("--payload") != std::string::npos);
  CHECK(message(with({"--socket", "req"})).find("--socket") != std::string::npos);
  CHECK(message(with({"--bogus"})).find("--bogus") != std::string::npos);
  CHECK(message(with({"--passes"})).find("missing value") != std::string::npos);
  CHECK(message(with({"--grow-phase=yes"})).find("--grow-phase") != std::string::npos);
}

TEST_CASE("--help needs nothing else and the usage text documents every option") {
  CHECK(Parse({"--help"}).help);
  const std::string usage = SimUsage();
  for (const char* opt : {"--modality", "--channels", "--scan", "--passes", "--rate", "--endpoint", "--phases",
                          "--counts", "--inclusion", "--seed", "--truth", "--frame-spectra", "--socket", "--payload",
                          "--readout-noise", "--series-id", "--start-delay-s", "--no-series-start", "--energy-drift",
                          "--energy-drift-start", "--energy-drift-ramp",
                          "--grow-phase", "--critical-dose", "--beam-current-pA", "--dwell-us", "--pixel-A",
                          "--energy-offset", "--dispersion", "--threads", "--queue-frames", "--pregenerate", "--hwm"}) {
    CAPTURE(opt);
    CHECK(usage.find(opt) != std::string::npos);
  }
}
