// The frame pump (generation threads + pacing sender) with an in-memory sink, and the truth file
// (parsed back with a minimal JSON reader and checked against the simulator).

#include "tools/sim/frame_pump.hpp"
#include "tools/sim/simulator.hpp"
#include "tools/sim/truth_writer.hpp"

#include <doctest/doctest.h>

#include <cctype>
#include <chrono>
#include <cmath>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

using namespace specwatch;
using namespace specwatch::sim;

namespace {

SimOptions Opt() {
  SimOptions o;
  o.modality = Modality::kEds;
  o.channels = 256;
  o.scan_width = 20;
  o.scan_height = 6;
  o.passes = 2;
  o.frame_spectra = 9;
  o.readout_noise_counts = 0.7;
  o.energy_drift_channels = 1.3;
  o.endpoint = "tcp://127.0.0.1:1";
  return o;
}

class CaptureSink : public FrameSink {
 public:
  bool Send(const FrameInfo& f, double, std::span<const std::byte> payload) override {
    order.push_back(f.frame_number);
    bytes.insert(bytes.end(), payload.begin(), payload.end());
    departures.push_back(std::chrono::steady_clock::now());
    return fail_after < 0 || static_cast<int>(order.size()) <= fail_after;
  }
  std::vector<uint64_t> order;
  std::vector<std::byte> bytes;
  std::vector<std::chrono::steady_clock::time_point> departures;
  int fail_after = -1;
};

// Minimal JSON reader: enough to check the truth file's structure and values.
struct Json {
  enum Kind { kNull, kBool, kNumber, kString, kArray, kObject } kind = kNull;
  bool b = false;
  double num = 0.0;
  std::string str;
  std::vector<Json> arr;
  std::map<std::string, Json> obj;
  const Json& operator[](const std::string& k) const { return obj.at(k); }
};

class JsonReader {
 public:
  explicit JsonReader(const std::string& s) : s_(s) {}
  Json Parse() {
    Json v = Value();
    Ws();
    if (i_ != s_.size()) throw std::runtime_error("trailing characters");
    return v;
  }

 private:
  void Ws() {
    while (i_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[i_]))) ++i_;
  }
  void Expect(char c) {
    Ws();
    if (i_ >= s_.size() || s_[i_] != c) throw std::runtime_error(std::string("expected ") + c + " at " + std::to_string(i_));
    ++i_;
  }
  std::string String() {
    Expect('"');
    std::string out;
    while (i_ < s_.size() && s_[i_] != '"') {
      if (s_[i_] == '\\') {
        ++i_;
        if (s_[i_] == 'u') {
          i_ += 4;
          out += '?';
        } else {
          out += s_[i_] == 'n' ? '\n' : s_[i_] == 't' ? '\t' : s_[i_];
        }
        ++i_;
      } else {
        out += s_[i_++];
      }
    }
    Expect('"');
    return out;
  }
  Json Value() {
    Ws();
    Json v;
    const char c = s_.at(i_);
    if (c == '{') {
      v.kind = Json::kObject;
      ++i_;
      Ws();
      if (s_[i_] == '}') {
        ++i_;
        return v;
      }
      for (;;) {
        std::string k = String();
        Expect(':');
        v.obj[k] = Value();
        Ws();
        if (s_[i_] == ',') {
          ++i_;
          continue;
        }
        Expect('}');
        return v;
      }
    }
    if (c == '[') {
      v.kind = Json::kArray;
      ++i_;
      Ws();
      if (s_[i_] == ']') {
        ++i_;
        return v;
      }
      for (;;) {
        v.arr.push_back(Value());
        Ws();
        if (s_[i_] == ',') {
          ++i_;
          continue;
        }
        Expect(']');
        return v;
      }
    }
    if (c == '"') {
      v.kind = Json::kString;
      v.str = String();
      return v;
    }
    if (s_.compare(i_, 4, "true") == 0 || s_.compare(i_, 5, "false") == 0) {
      v.kind = Json::kBool;
      v.b = s_[i_] == 't';
      i_ += v.b ? 4 : 5;
      return v;
    }
    if (s_.compare(i_, 4, "null") == 0) {
      i_ += 4;
      return v;
    }
    size_t used = 0;
    v.kind = Json::kNumber;
    v.num = std::stod(s_.substr(i_, 40), &used);
    i_ += used;
    return v;
  }
  const std::string& s_;
  size_t i_ = 0;
};

}  // namespace

TEST_CASE("Pump: frames arrive in order with the same bytes whatever the thread count and queue depth") {
  Simulator sim(Opt());
  std::atomic<bool> stop{false};
  std::vector<std::byte> reference;
  for (int threads : {1, 3}) {
    for (uint32_t queue : {1u, 2u, 0u}) {
      CAPTURE(threads);
      CAPTURE(queue);
      CaptureSink sink;
      PumpOptions po;
      po.generator_threads = threads;
      po.queue_frames = queue;
      const PumpStats st = RunPump(sim, sink, po, stop);
      CHECK_FALSE(st.interrupted);
      CHECK(st.frames == sim.FrameCount());
      CHECK(st.spectra == sim.SpectrumCount());
      for (uint64_t k = 0; k < sink.order.size(); ++k) REQUIRE(sink.order[k] == k);
      if (reference.empty()) reference = sink.bytes;
      CHECK(sink.bytes == reference);
    }
  }
  CaptureSink pre;
  PumpOptions po;
  po.pregenerate = true;
  po.generator_threads = 2;
  CHECK(RunPump(sim, pre, po, stop).frames == sim.FrameCount());
  CHECK(pre.bytes == reference);
}

TEST_CASE("Pump: paced frames never leave before their due time (less the 0.2 ms early-send margin)") {
  SimOptions o = Opt();
  o.frame_spectra = 20;  // 12 frames
  Simulator sim(o);
  CaptureSink sink;
  PumpOptions po;
  po.rate_spectra_per_s = 4000.0;  // one frame per 5 ms
  std::atomic<bool> stop{false};
  // The schedule starts at t0 >= the call, so frame k cannot leave before call + k·20/4000 s − 0.2 ms
  // (an upper bound on lateness would be a timing assertion; this is a correctness one).
  const auto call = std::chrono::steady_clock::now();
  const PumpStats st = RunPump(sim, sink, po, stop);
  REQUIRE(sink.departures.size() == sim.FrameCount());
  for (size_t k = 1; k < sink.departures.size(); ++k) {
    const double since_call = std::chrono::duration<double>(sink.departures[k] - call).count();
    CHECK(since_call >= k * 20 / 4000.0 - 0.0002 - 1e-6);
  }
  CHECK(st.achieved_rate > 0.0);
}

TEST_CASE("Pump: stop flag and a failing sink end the run as interrupted") {
  Simulator sim(Opt());
  std::atomic<bool> stop{true};
  CaptureSink sink;
  PumpStats st = RunPump(sim, sink, PumpOptions{}, stop);
  CHECK(st.interrupted);
  CHECK(st.frames == 0);
  stop = false;
  CaptureSink failing;
  failing.fail_after = 3;
  st = RunPump(sim, failing, PumpOptions{}, stop);
  CHECK(st.interrupted);
  CHECK(st.frames == 3);
}

TEST_CASE("Truth file: valid JSON whose contents match the simulator") {
  SimOptions o = Opt();
  o.inclusion_fraction = 0.05;
  o.grow_phase = true;
  o.critical_dose_e_per_A2 = 2000.0;
  Simulator sim(o);
  std::ostringstream out;
  WriteTruthJson(sim, {"specwatch-sim", "--modality", "eds"}, out);
  const std::string text = out.str();
  const Json t = JsonReader(text).Parse();
  CHECK(t["format"].str == "specwatch-sim-truth");
  CHECK(t["command_line"].arr.size() == 3);
  CHECK(t["arguments"]["energy_drift"].num == 1.3);
  CHECK(t["arguments"]["grow_phase"].b);
  CHECK(t["channels"].num == 256);
  CHECK(t["spectra"].num == static_cast<double>(sim.SpectrumCount()));
  CHECK(t["energy_axis"]["values"].arr.size() == 256);
  CHECK(t["energy_axis"]["unit"].str == "keV");
  const auto& phases = t["phases"].arr;
  REQUIRE(phases.size() == sim.Phases().size());
  for (size_t p = 0; p < phases.size(); ++p) {
    const auto s = sim.PhaseSpectrum(static_cast<int>(p), false);
    REQUIRE(phases[p]["spectrum"].arr.size() == s.size());
    for (size_t j = 0; j < s.size(); ++j) REQUIRE(phases[p]["spectrum"].arr[j].num == s[j]);  // shortest round-trip form
    CHECK(phases[p]["damaged_spectrum"].arr.size() == s.size());
  }
  const auto& ab = t["abundances"]["values"].arr;
  REQUIRE(ab.size() == static_cast<size_t>(sim.GetScene().PhaseCount()));
  for (uint64_t px = 0; px < sim.GetScene().Pixels(); ++px) {
    double sum = 0.0;
    for (const auto& phase : ab) sum += phase.arr[px].num;
    REQUIRE(sum == doctest::Approx(1.0).epsilon(1e-12));
  }
  double mask = 0.0;
  for (const auto& m : t["inclusion"]["mask"].arr) mask += m.num;
  CHECK(mask == t["inclusion"]["pixels"].num);
  CHECK(t["grow_phase"]["radius_px_per_pass"].arr.size() == o.passes);
  CHECK(t["dose"]["dose_per_spectrum_e_per_A2"].num == doctest::Approx(sim.DosePerSpectrum()));
  CHECK(t["dose"]["accumulated_dose_e_per_A2"].arr.size() == sim.GetScene().Pixels());
  CHECK(t["dose"]["accumulated_dose_e_per_A2"].arr[0].num == doctest::Approx(2.0 * sim.DosePerSpectrum()));
  CHECK(t["damage"]["intact_weight_per_pass"].arr[1].num == doctest::Approx(sim.IntactWeight(1)));
  CHECK(t["drift"]["change_points"].arr.back().arr[1].num == sim.ShiftChannels(sim.SpectrumCount() - 1));
  CHECK(t["drift"]["start_spectrum"].num == 0);
  CHECK(t["drift"]["ramp_spectra"].num == static_cast<double>(sim.SpectrumCount() - 1));
  CHECK(t["arguments"]["energy_drift_ramp"].str == "end");
}
