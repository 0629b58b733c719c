// The simulator end to end (without ZeroMQ): determinism, the statistics of generated frames against the
// noiseless expectation, drift, damage, readout noise, saturation and the wire headers.

#include "tools/sim/dose.hpp"
#include "tools/sim/simulator.hpp"
#include "tools/sim/wire_messages.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <numeric>
#include <vector>

using namespace specwatch;
using namespace specwatch::sim;

namespace {

SimOptions Small(Modality m = Modality::kEds) {
  SimOptions o;
  o.modality = m;
  o.channels = 512;
  o.scan_width = 12;
  o.scan_height = 5;
  o.passes = 3;
  o.phases = 3;
  o.mean_counts = 400.0;
  o.endpoint = "tcp://127.0.0.1:1";
  return o;
}

std::vector<std::byte> AllFrames(const Simulator& sim, bool reverse = false) {
  std::vector<std::byte> out(sim.PayloadBytes(1) * sim.SpectrumCount());
  FrameWorkspace ws;
  const uint64_t n = sim.FrameCount();
  for (uint64_t i = 0; i < n; ++i) {
    const uint64_t k = reverse ? n - 1 - i : i;
    const FrameInfo f = sim.Frame(k);
    sim.GenerateFrame(k, ws, std::span(out).subspan(f.start_index * sim.PayloadBytes(1), sim.PayloadBytes(f.spectrum_count)));
  }
  return out;
}

template <typename T>
std::vector<double> Spectrum(const std::vector<std::byte>& bytes, const Simulator& sim, uint64_t i) {
  std::vector<double> s(sim.Channels());
  const T* p = reinterpret_cast<const T*>(bytes.data() + i * sim.PayloadBytes(1));
  for (int j = 0; j < sim.Channels(); ++j) s[j] = static_cast<double>(p[j]);
  return s;
}

}  // namespace

TEST_CASE("Same options give byte-identical frames, in any generation order; another seed differs") {
  for (PayloadKind pk : {PayloadKind::kUint16, PayloadKind::kUint32, PayloadKind::kFloat32}) {
    SimOptions o = Small(Modality::kEels);
    o.payload = pk;
    o.readout_noise_counts = 1.5;
    o.energy_drift_channels = 2.7;
    o.critical_dose_e_per_A2 = 5000.0;
    o.grow_phase = true;
    o.inclusion_fraction = 0.05;
    o.frame_spectra = 7;  // frames straddle lines and passes; last frame partial
    const auto a = AllFrames(Simulator(o));
    const auto b = AllFrames(Simulator(o), /*reverse=*/true);
    CHECK(a == b);
    o.seed = 2;
    const auto c = AllFrames(Simulator(o));
    CHECK(a != c);
  }
}

TEST_CASE("Generated counts: per-channel mean = variance = ExpectedSpectrum (sparse and dense paths)") {
  // A 1x1 scan visited M times has the same expectation every visit (no drift, no damage).
  for (double counts : {300.0, 2.0e5}) {  // 2e5 > 20 counts x 128 channels: the per-channel path
    CAPTURE(counts);
    SimOptions o = Small(Modality::kEds);
    o.channels = 128;
    o.scan_width = 1;
    o.scan_height = 1;
    o.passes = counts > 1e4 ? 3000 : 20000;
    o.mean_counts = counts;
    o.payload = PayloadKind::kUint32;
    Simulator sim(o);
    const auto mu = sim.ExpectedSpectrum(0);
    CHECK(std::accumulate(mu.begin(), mu.end(), 0.0) == doctest::Approx(counts));
    const auto bytes = AllFrames(sim);
    const double m = static_cast<double>(o.passes);
    std::vector<double> s1(o.channels, 0.0), s2(o.channels, 0.0);
    for (uint64_t i = 0; i < sim.SpectrumCount(); ++i) {
      const auto s = Spectrum<uint32_t>(bytes, sim, i);
      for (int j = 0; j < o.channels; ++j) {
        s1[j] += s[j];
        s2[j] += s[j] * s[j];
      }
    }
    double var_sum = 0.0, mu_sum = 0.0, var_sd2 = 0.0;
    for (int j = 0; j < o.channels; ++j) {
      const double mean = s1[j] / m;
      const double var = (s2[j] - m * mean * mean) / (m - 1.0);
      if (mu[j] < 1e-9) continue;
      CHECK(std::fabs(mean - mu[j]) < 5.0 * std::sqrt(mu[j] / m) + 1e-9);
      var_sum += var;
      mu_sum += mu[j];
      var_sd2 += (mu[j] + 2.0 * mu[j] * mu[j]) / m;
    }
    CHECK(std::fabs(var_sum - mu_sum) < 5.0 * std::sqrt(var_sd2));
  }
}

TEST_CASE("Energy drift shifts the spectrum by the requested channels, linearly in time") {
  SimOptions o = Small(Modality::kEds);
  o.energy_drift_channels = 5.0;  // a whole number of channels: the shifted spectrum is exactly the old one moved
  Simulator sim(o);
  const uint64_t last = sim.SpectrumCount() - 1;
  CHECK(sim.ShiftChannels(0) == 0.0);
  CHECK(sim.ShiftChannels(last) == 5.0);
  CHECK(sim.ShiftChannels(last / 2) == doctest::Approx(2.5).epsilon(0.03));
  const auto s0 = sim.PhaseSpectrum(0, false, 0);
  const auto s5 = sim.PhaseSpectrum(0, false, sim.ShiftLevel(last));
  for (int j = 5; j < o.channels; ++j) REQUIRE(s5[j] == doctest::Approx(s0[j - 5]).epsilon(1e-9));

  // A fractional drift moves a peak centre (Fe Ka, a near-Gaussian line 14 channels wide: the log-parabola
  // of docs/science.md §7.1 is exact for a Gaussian) by the drift quantised to 1/16 channel (±0.01 channel).
  o.channels = 2048;
  o.phases = 1;  // Fe2O3 everywhere
  o.energy_drift_channels = 3.3;
  Simulator sim2(o);
  auto centre = [&](const std::vector<double>& s) {
    const int lo = static_cast<int>((6.2 - sim2.Axis().offset) / sim2.Axis().dispersion);
    int best = lo;
    for (int j = lo; j < lo + 40; ++j) best = s[j] > s[best] ? j : best;
    const double l = std::log(s[best - 1]), c = std::log(s[best]), r = std::log(s[best + 1]);
    return best + (l - r) / (2.0 * (l - 2.0 * c + r));
  };
  const uint64_t last2 = sim2.SpectrumCount() - 1;
  const double shift = centre(sim2.ExpectedSpectrum(last2)) - centre(sim2.ExpectedSpectrum(0));
  CHECK(sim2.ShiftChannels(last2) == std::round(3.3 * 16) / 16);
  CHECK(shift == doctest::Approx(std::round(3.3 * 16) / 16).epsilon(0.01 / 3.3));
  // The change points list every quantised level once, in order.
  const auto cp = sim2.DriftChangePoints();
  CHECK(cp.front().first == 0);
  CHECK(cp.back().second == sim2.ShiftChannels(last2));
  CHECK(cp.size() == static_cast<size_t>(std::round(3.3 * 16)) + 1);
}

TEST_CASE("Energy drift start and ramp: a step lands at its spectrum, a ramp reaches the total at its end") {
  SimOptions o = Small(Modality::kEds);  // 12x5 scan, 3 passes: 180 spectra
  o.energy_drift_channels = 2.0;          // whole channels: the shifted spectrum is exactly the old one moved
  o.energy_drift_start_spectrum = 77;
  o.energy_drift_ramp_spectra = 0;
  Simulator step(o);
  CHECK(step.DriftRampSpectra() == 0);
  CHECK(step.ShiftChannels(0) == 0.0);
  CHECK(step.ShiftChannels(76) == 0.0);
  CHECK(step.ShiftChannels(77) == 2.0);
  CHECK(step.ShiftChannels(step.SpectrumCount() - 1) == 2.0);
  const auto cp = step.DriftChangePoints();
  REQUIRE(cp.size() == 2);
  CHECK(cp[1].first == 77);
  CHECK(cp[1].second == 2.0);
  // The expected spectra themselves: 76 is the undrifted one, 77 the same scene moved by 2 channels (spectra
  // 76 and 77 are different pixels, so compare each with its own undrifted expectation).
  SimOptions still = o;
  still.energy_drift_channels = 0.0;
  Simulator ref(still);
  const auto before = step.ExpectedSpectrum(76), before_ref = ref.ExpectedSpectrum(76);
  for (int j = 0; j < o.channels; ++j) REQUIRE(before[j] == doctest::Approx(before_ref[j]).epsilon(1e-12));
  const auto after = step.ExpectedSpectrum(77), after_ref = ref.ExpectedSpectrum(77);
  double moved = 0.0;
  for (int j = 2; j < o.channels; ++j) {
    REQUIRE(after[j] == doctest::Approx(after_ref[j - 2]).epsilon(1e-9));
    moved += std::fabs(after[j] - after_ref[j]);
  }
  CHECK(moved > 1.0);  // the shift is visible: not the undrifted spectrum

  // A ramp of 40 spectra from 50: linear in between, the total from 90 on.
  o.energy_drift_start_spectrum = 50;
  o.energy_drift_ramp_spectra = 40;
  Simulator ramp(o);
  CHECK(ramp.ShiftChannels(50) == 0.0);
  CHECK(ramp.ShiftChannels(70) == 1.0);
  CHECK(ramp.ShiftChannels(60) == std::round(16.0 * 2.0 * 10 / 40) / 16);
  CHECK(ramp.ShiftChannels(89) == std::round(16.0 * 2.0 * 39 / 40) / 16);
  CHECK(ramp.ShiftChannels(90) == 2.0);
  CHECK(ramp.ShiftChannels(179) == 2.0);
  // The default ramp ends at the last spectrum, from the start on.
  o.energy_drift_ramp_spectra = -1;
  Simulator to_end(o);
  CHECK(to_end.DriftRampSpectra() == 129);
  CHECK(to_end.ShiftChannels(50) == 0.0);
  CHECK(to_end.ShiftChannels(179) == 2.0);
  CHECK(to_end.ShiftChannels(114) == std::round(16.0 * 2.0 * 64 / 129) / 16);
  // A start beyond the run is a configuration error naming the option.
  o.energy_drift_start_spectrum = 180;
  CHECK_THROWS_WITH_AS(Simulator{o}, doctest::Contains("--energy-drift-start"), sim::ConfigError);
}

TEST_CASE("Beam damage: the expected spectrum follows S_inf + (S0 - S_inf) * <exp(-D/Dc)> over each dwell") {
  SimOptions o = Small(Modality::kEels);
  o.scan_width = 1;
  o.scan_height = 1;
  o.passes = 40;
  o.phases = 1;
  o.beam_current_pA = 20.0;
  o.dwell_us = 50.0;
  o.pixel_A = 2.0;
  const double d = 6.241509074 * 20.0 * 50.0 / 4.0;  // e-/A^2 per visit
  o.critical_dose_e_per_A2 = 6.0 * d;
  Simulator sim(o);
  CHECK(sim.DosePerSpectrum() == doctest::Approx(d).epsilon(1e-9));
  const auto s0 = sim.PhaseSpectrum(0, false);
  const auto sinf = sim.PhaseSpectrum(0, true);
  for (uint32_t p : {0u, 1u, 5u, 17u, 39u}) {
    // Independent: the mean of exp(−D/Dc) over D ∈ [p d, (p+1) d] by the trapezoid rule (4000 intervals).
    const int n = 4000;
    double mean = 0.0;
    for (int i = 0; i <= n; ++i) mean += (i == 0 || i == n ? 0.5 : 1.0) * std::exp(-(p + i / double(n)) * d / o.critical_dose_e_per_A2);
    mean /= n;
    const auto e = sim.ExpectedSpectrum(p);
    for (int j = 0; j < o.channels; ++j) {
      REQUIRE(e[j] == doctest::Approx(sinf[j] + (s0[j] - sinf[j]) * mean).epsilon(1e-6));
    }
  }
  // Without --critical-dose nothing changes between passes.
  o.critical_dose_e_per_A2 = 0.0;
  Simulator undamaged(o);
  CHECK(undamaged.ExpectedSpectrum(0) == undamaged.ExpectedSpectrum(39));
}

TEST_CASE("Readout noise: unit-variance table; float32 payload carries sigma * z") {
  SimOptions o = Small(Modality::kRaman);
  o.scan_width = 1;
  o.scan_height = 1;
  o.passes = 400;
  o.channels = 256;
  o.mean_counts = 1e-9;  // no counts: the payload is pure readout noise
  o.readout_noise_counts = 2.5;
  o.payload = PayloadKind::kFloat32;
  Simulator sim(o);
  const auto& t = sim.NoiseTable();
  double m = 0.0, v = 0.0;
  for (float z : t) m += z;
  m /= t.size();
  for (float z : t) v += (z - m) * (z - m);
  v /= t.size();
  CHECK(std::fabs(m) < 1e-6);
  CHECK(v == doctest::Approx(1.0).epsilon(1e-6));
  const auto bytes = AllFrames(sim);
  const float* f = reinterpret_cast<const float*>(bytes.data());
  const size_t n = bytes.size() / 4;
  double s1 = 0.0, s2 = 0.0;
  for (size_t i = 0; i < n; ++i) {
    s1 += f[i];
    s2 += double(f[i]) * f[i];
  }
  const double mean = s1 / n, var = s2 / n - mean * mean;
  CHECK(std::fabs(mean) < 5.0 * 2.5 / std::sqrt(double(n)));
  CHECK(var == doctest::Approx(6.25).epsilon(5.0 * std::sqrt(2.0 / n)));

  // Integer payloads: rounded and clamped at 0, so no negative values and a positive mean.
  o.payload = PayloadKind::kUint16;
  Simulator isim(o);
  const auto ib = AllFrames(isim);
  const uint16_t* u = reinterpret_cast<const uint16_t*>(ib.data());
  double um = 0.0;
  for (size_t i = 0; i < ib.size() / 2; ++i) um += u[i];
  CHECK(um / (ib.size() / 2) > 0.5);  // E[max(0, round(2.5 z))] ≈ 1.0
}

TEST_CASE("uint16 saturates at 65535 and reports it") {
  SimOptions o = Small(Modality::kEds);
  o.channels = 16;
  o.dispersion = 0.5;
  o.scan_width = 2;
  o.scan_height = 1;
  o.passes = 1;
  o.mean_counts = 5e6;
  Simulator sim(o);
  FrameWorkspace ws;
  std::vector<std::byte> out(sim.PayloadBytes(2));
  CHECK(sim.GenerateFrame(0, ws, out) > 0);
  const uint16_t* u = reinterpret_cast<const uint16_t*>(out.data());
  CHECK(*std::max_element(u, u + 32) == 65535);
}

TEST_CASE("Frames tile the raster across passes; headers carry what a late joiner needs") {
  SimOptions o = Small(Modality::kXrd);
  o.frame_spectra = 25;  // 12x5x3 = 180 spectra -> 8 frames, the last one with 5
  Simulator sim(o);
  CHECK(sim.FrameCount() == 8);
  uint64_t next = 0;
  for (uint64_t k = 0; k < sim.FrameCount(); ++k) {
    const FrameInfo f = sim.Frame(k);
    CHECK(f.start_index == next);
    next += f.spectrum_count;
  }
  CHECK(next == sim.SpectrumCount());
  CHECK(sim.Frame(7).spectrum_count == 5);
  const SpectrumPosition p = sim.Position(12 * 5 + 12 + 3);
  CHECK(p.pass == 1);
  CHECK(p.y == 1);
  CHECK(p.x == 3);

  const auto h = MakeFrameHeader(sim, sim.Frame(7), 123.5);
  CHECK(h.series_id() == "sim-xrd-1");
  CHECK(h.frame_number() == 7);
  CHECK(h.start_index() == 175);
  CHECK(h.spectrum_count() == 5);
  CHECK(h.channel_count() == 512);
  CHECK(h.payload_type() == wire::PAYLOAD_UINT16);
  CHECK(h.modality() == wire::MODALITY_XRD);
  CHECK(h.scan_shape().width() == 12);
  CHECK(h.scan_shape().height() == 5);
  CHECK(h.energy_axis().unit() == "deg");
  CHECK(h.energy_axis().dispersion() == doctest::Approx(80.0 / 512));
  CHECK(h.acquisition().dwell_s() == doctest::Approx(1e-3));  // 1/rate with the default rate 1000
  CHECK(h.acquisition().pixel_area_a2() == doctest::Approx(1.0));
  const auto s = MakeSeriesStart(sim, 1.0);
  CHECK(s.passes() == 3);
  CHECK(s.scan_shape().width() == 12);
  CHECK(s.channel_count() == 512);
  const auto e = MakeSeriesEnd(sim, 8, 180);
  CHECK(e.frames_sent() == 8);
  CHECK(e.spectra_sent() == 180);
}

namespace specwatch::sim {

TEST_CASE("Region of interest: revisits after the full passes, explicit positions, pass numbers continuing") {
  SimOptions o = Small(Modality::kEds);
  o.scan_width = 8;
  o.scan_height = 6;
  o.passes = 2;
  o.roi_x0 = 2, o.roi_y0 = 1, o.roi_x1 = 4, o.roi_y1 = 2;  // 3 x 2 = 6 positions
  o.roi_passes = 3;
  o.frame_spectra = 4;
  Simulator sim(o);
  CHECK(sim.SpectrumCount() == 8 * 6 * 2 + 6 * 3);
  // The first ROI spectrum follows the last raster one.
  const SpectrumPosition first = sim.Position(96);
  CHECK((first.x == 2 && first.y == 1 && first.pass == 2));
  const SpectrumPosition sixth = sim.Position(96 + 5);
  CHECK((sixth.x == 4 && sixth.y == 2 && sixth.pass == 2));
  const SpectrumPosition last = sim.Position(96 + 17);
  CHECK((last.x == 4 && last.y == 2 && last.pass == 4));
  // Raster frames carry no positions; a frame reaching into the ROI passes carries them all.
  CHECK(MakeFrameHeader(sim, sim.Frame(0), 0.0).positions_size() == 0);
  const auto h = MakeFrameHeader(sim, sim.Frame(24), 0.0);  // spectra 96..99
  REQUIRE(h.positions_size() == 4);
  CHECK((h.positions(1).x() == 3 && h.positions(1).y() == 1 && h.positions(1).scan_pass() == 2));
  // Damage follows visits: the 5th visit of a ROI position has the intact weight of pass 4.
  CHECK(sim.IntactWeight(last.pass) == doctest::Approx(IntactWeight(4, sim.DosePerSpectrum(), o.critical_dose_e_per_A2)));
  o.roi_x1 = 8;  // outside the 8-wide scan
  CHECK_THROWS(ParseSimArgs(std::vector<std::string>{"--modality", "eds", "--endpoint", "tcp://127.0.0.1:1", "--scan",
                                                     "8x6", "--roi", "2,1,8,2", "--roi-passes", "1"}));
  const SimOptions parsed = ParseSimArgs(std::vector<std::string>{"--modality", "eds", "--endpoint", "tcp://127.0.0.1:1",
                                                                  "--scan", "8x6", "--roi", "2,1,4,2", "--roi-passes", "3"});
  CHECK((parsed.roi_x0 == 2 && parsed.roi_y1 == 2 && parsed.roi_passes == 3));
}

}  // namespace specwatch::sim
