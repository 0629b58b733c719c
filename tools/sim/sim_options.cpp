#include "tools/sim/sim_options.hpp"

#include "tools/common/command_line.hpp"
#include "tools/sim/spectral_models.hpp"

#include <cmath>
#include <cstdio>
#include <functional>
#include <map>

namespace specwatch::sim {

namespace {

std::string Fmt(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

using tools::ParseCommandLine;

double ParseDouble(const std::string& name, const std::string& text) {
  return tools::ParseNumber<ConfigError>(name, text);
}

uint64_t ParseUnsigned(const std::string& name, const std::string& text) {
  return tools::ParseInteger<ConfigError, uint64_t>(name, text);
}

uint64_t ParseRange(const std::string& name, const std::string& text, uint64_t lo, uint64_t hi) {
  return tools::ParseInteger<ConfigError, uint64_t>(name, text, lo, hi);
}

double ParseNonNegative(const std::string& name, const std::string& text) {
  const double v = ParseDouble(name, text);
  if (v < 0.0) throw ConfigError(name + ": must be >= 0, got " + text);
  return v;
}

double ParsePositive(const std::string& name, const std::string& text) {
  const double v = ParseDouble(name, text);
  if (!(v > 0.0)) throw ConfigError(name + ": must be > 0, got " + text);
  return v;
}

}  // namespace

const char* ModalityName(Modality m) {
  switch (m) {
    case Modality::kEels: return "eels";
    case Modality::kEds: return "eds";
    case Modality::kXrd: return "xrd";
    case Modality::kRaman: return "raman";
    default: return "other";
  }
}

const char* PayloadName(PayloadKind p) {
  switch (p) {
    case PayloadKind::kUint16: return "uint16";
    case PayloadKind::kUint32: return "uint32";
    case PayloadKind::kFloat32: return "float32";
  }
  return "";
}

const char* SocketName(SocketKind s) { return s == SocketKind::kPub ? "pub" : "push"; }

std::string SimOptions::SeriesId() const {
  if (!series_id.empty()) return series_id;
  return std::string("sim-") + ModalityName(modality) + "-" + std::to_string(seed);
}

std::string SimUsage() {
  return R"(specwatch-sim: physics-based spectroscopy detector simulator (EELS, EDS, XRD, Raman).
Sends SeriesStart, frames of Poisson-noisy spectra and SeriesEnd over ZeroMQ (proto/frame.proto),
paced at a given rate; prints a one-line summary and exits 0 when done (also after SIGINT/SIGTERM).

usage: specwatch-sim --modality eels|eds|xrd|raman --endpoint ENDPOINT [options]

Acquisition
  --modality M             eels | eds | xrd | raman                                   (required)
  --channels N             channels per spectrum, 16..65536                             [2048]
  --scan WxH               scan positions per line x lines                              [64x64]
  --passes N               repeated passes over the same area                           [1]
  --rate R                 spectra per second; 0 = as fast as possible                  [1000]
  --frame-spectra N        spectra per frame; 1 = single-spectrum frames         [one scan line]
  --counts C               mean counts per spectrum (pure phase, undamaged, no drift),
                           at most 1e9                                                  [1000]
  --readout-noise SIGMA    Gaussian readout noise per channel, in counts (integer
                           payloads: rounded, clamped >= 0). Typical: EELS CMOS 1-3,
                           Raman CCD 2-5, counting detectors 0                          [0]
  --payload T              uint16 | uint32 | float32 (uint16 saturates at 65535)        [uint16]
  --energy-offset X        axis value of channel 0 (eV, keV, deg, cm-1)     [modality default]
  --dispersion X           axis units per channel                          [modality default]
                           defaults: EELS -20 eV + 1024 eV/N (ZLP in range),
                           EDS 0 keV + 20.48 keV/N, XRD 10 deg + 80 deg/N,
                           Raman 100 cm-1 + 3200 cm-1/N

Sample
  --phases N               base phases laid out as soft Voronoi regions, 1..5 (EDS 1..6) [3]
  --inclusion F            fraction of pixels holding a rare inclusion phase in
                           small clusters (0 = none), 0..0.5                            [0]
  --grow-phase             add a phase that nucleates and grows over the passes
  --roi X0,Y0,X1,Y1        a rectangle (inclusive) revisited after the full passes     [none]
  --roi-passes N           passes over --roi after the full passes (frames then carry
                           explicit positions)                                          [0]
  --seed N                 random seed; same arguments + seed = byte-identical payloads [1]

Drift and dose
  --energy-drift CH        total energy-axis shift in channels, reached linearly over
                           the ramp (quantised to 1/16 channel)                        [0]
  --energy-drift-start N   spectrum index (raster order across passes) where the
                           drift begins; earlier spectra are unshifted                  [0]
  --energy-drift-ramp N    spectra over which the shift grows to the total; 0 = a
                           step at the start                     [to the end of the run]
  --critical-dose DC       beam damage: S(D) = Sinf + (S0 - Sinf) exp(-D/DC), D the
                           dose a position has received, e-/A^2; absent or 0 = off     [off]
  --beam-current-pA I      beam current in pA                                           [50]
  --dwell-us T             dwell per spectrum in us                  [1e6/rate; 10 if rate 0]
  --pixel-A L              pixel edge in A (area L^2); dose per spectrum
                           D = 6.2415 I[pA] T[us] / L^2 e-/A^2                           [1]

Transport
  --endpoint E             ZeroMQ endpoint(s), comma separated; "@" bind (default),
                           ">" connect, e.g. tcp://127.0.0.1:5555 or @tcp://127.0.0.1:*  (required)
  --socket S               pub | push                                                   [pub]
  --series-id ID           series id                                  [sim-<modality>-<seed>]
  --start-delay-s S        wait after binding/connecting so subscribers can join (PUB
                           drops messages sent before a subscriber is connected)        [0.5]
  --no-series-start        do not send SeriesStart (late-joiner tests); every frame
                           header still carries scan shape, axis and acquisition
  --hwm N                  ZeroMQ send high-water mark in messages (0 = ZeroMQ's 1000)  [0]

Output and performance
  --truth FILE             write the ground truth as JSON (see tools/sim/README.md)
  --threads N              frame-generator threads (payloads do not depend on it)       [1]
  --queue-frames N         frames generated ahead of the sender (0 = auto: ~0.1 s of
                           frames, at least 4*threads+4, at most 64 MiB)                [0]
  --pregenerate            generate every frame before sending (exact statistics, for
                           rates the generator cannot sustain; needs the memory)
  --help                   this text
)";
}

SimOptions ParseSimArgs(std::span<const std::string> args) {
  SimOptions o;
  bool have_modality = false;
  using Setter = std::function<void(const std::string& name, const std::string& value)>;
  const std::map<std::string, Setter> valued = {
      {"--modality",
       [&](const std::string& n, const std::string& v) {
         if (v == "eels") o.modality = Modality::kEels;
         else if (v == "eds") o.modality = Modality::kEds;
         else if (v == "xrd") o.modality = Modality::kXrd;
         else if (v == "raman") o.modality = Modality::kRaman;
         else throw ConfigError(n + ": '" + v + "' is not one of eels, eds, xrd, raman");
         have_modality = true;
       }},
      {"--channels", [&](auto& n, auto& v) { o.channels = static_cast<int>(ParseRange(n, v, 16, 65536)); }},
      {"--scan",
       [&](const std::string& n, const std::string& v) {
         const auto x = v.find_first_of("xX");
         if (x == std::string::npos) throw ConfigError(n + ": '" + v + "' is not WxH (e.g. 64x64)");
         o.scan_width = static_cast<uint32_t>(ParseRange(n, v.substr(0, x), 1, 1u << 20));
         o.scan_height = static_cast<uint32_t>(ParseRange(n, v.substr(x + 1), 1, 1u << 20));
       }},
      {"--passes", [&](auto& n, auto& v) { o.passes = static_cast<uint32_t>(ParseRange(n, v, 1, 1u << 30)); }},
      {"--roi",
       [&](const std::string& n, const std::string& v) {
         std::vector<uint32_t> c;
         size_t start = 0;
         while (start <= v.size()) {
           const size_t comma = std::min(v.find(',', start), v.size());
           c.push_back(static_cast<uint32_t>(ParseRange(n, v.substr(start, comma - start), 0, (1u << 20) - 1)));
           start = comma + 1;
         }
         if (c.size() != 4 || c[0] > c[2] || c[1] > c[3]) {
           throw ConfigError(n + ": '" + v + "' is not X0,Y0,X1,Y1 with X0 <= X1 and Y0 <= Y1");
         }
         o.roi_x0 = c[0], o.roi_y0 = c[1], o.roi_x1 = c[2], o.roi_y1 = c[3];
       }},
      {"--roi-passes", [&](auto& n, auto& v) { o.roi_passes = static_cast<uint32_t>(ParseRange(n, v, 0, 1u << 20)); }},
      {"--rate", [&](auto& n, auto& v) { o.rate_spectra_per_s = ParseNonNegative(n, v); }},
      {"--endpoint", [&](auto&, auto& v) { o.endpoint = v; }},
      {"--phases", [&](auto& n, auto& v) { o.phases = static_cast<int>(ParseRange(n, v, 1, 6)); }},
      {"--counts",
       [&](const std::string& n, const std::string& v) {
         o.mean_counts = ParsePositive(n, v);
         if (o.mean_counts > 1e9) throw ConfigError(n + ": at most 1e9 counts per spectrum, got " + v);
       }},
      {"--inclusion",
       [&](const std::string& n, const std::string& v) {
         o.inclusion_fraction = ParseNonNegative(n, v);
         if (o.inclusion_fraction > 0.5) throw ConfigError(n + ": fraction must be <= 0.5, got " + v);
       }},
      {"--seed", [&](auto& n, auto& v) { o.seed = ParseUnsigned(n, v); }},
      {"--truth", [&](auto&, auto& v) { o.truth_path = v; }},
      {"--frame-spectra", [&](auto& n, auto& v) { o.frame_spectra = static_cast<uint32_t>(ParseRange(n, v, 1, 1u << 24)); }},
      {"--socket",
       [&](const std::string& n, const std::string& v) {
         if (v == "pub") o.socket = SocketKind::kPub;
         else if (v == "push") o.socket = SocketKind::kPush;
         else throw ConfigError(n + ": '" + v + "' is not pub or push");
       }},
      {"--payload",
       [&](const std::string& n, const std::string& v) {
         if (v == "uint16") o.payload = PayloadKind::kUint16;
         else if (v == "uint32") o.payload = PayloadKind::kUint32;
         else if (v == "float32") o.payload = PayloadKind::kFloat32;
         else throw ConfigError(n + ": '" + v + "' is not uint16, uint32 or float32");
       }},
      {"--readout-noise", [&](auto& n, auto& v) { o.readout_noise_counts = ParseNonNegative(n, v); }},
      {"--series-id",
       [&](const std::string& n, const std::string& v) {
         if (v.empty()) throw ConfigError(n + ": must not be empty");
         o.series_id = v;
       }},
      {"--start-delay-s", [&](auto& n, auto& v) { o.start_delay_s = ParseNonNegative(n, v); }},
      {"--energy-drift",
       [&](const std::string& n, const std::string& v) {
         o.energy_drift_channels = ParseDouble(n, v);
         if (std::fabs(o.energy_drift_channels) > 4096.0) throw ConfigError(n + ": |drift| must be <= 4096 channels");
       }},
      {"--energy-drift-start", [&](auto& n, auto& v) { o.energy_drift_start_spectrum = ParseUnsigned(n, v); }},
      {"--energy-drift-ramp",
       [&](auto& n, auto& v) { o.energy_drift_ramp_spectra = static_cast<int64_t>(ParseRange(n, v, 0, 1ull << 62)); }},
      {"--critical-dose", [&](auto& n, auto& v) { o.critical_dose_e_per_A2 = ParseNonNegative(n, v); }},
      {"--beam-current-pA", [&](auto& n, auto& v) { o.beam_current_pA = ParseNonNegative(n, v); }},
      {"--dwell-us", [&](auto& n, auto& v) { o.dwell_us = ParsePositive(n, v); }},
      {"--pixel-A", [&](auto& n, auto& v) { o.pixel_A = ParsePositive(n, v); }},
      {"--energy-offset", [&](auto& n, auto& v) { o.energy_offset = ParseDouble(n, v); }},
      {"--dispersion", [&](auto& n, auto& v) { o.dispersion = ParsePositive(n, v); }},
      {"--threads", [&](auto& n, auto& v) { o.generator_threads = static_cast<int>(ParseRange(n, v, 1, 64)); }},
      {"--queue-frames", [&](auto& n, auto& v) { o.queue_frames = static_cast<uint32_t>(ParseRange(n, v, 0, 1u << 24)); }},
      {"--hwm", [&](auto& n, auto& v) { o.send_hwm = static_cast<int>(ParseRange(n, v, 0, 1u << 24)); }},
  };
  const std::map<std::string, std::function<void()>> flags = {
      {"--no-series-start", [&] { o.send_series_start = false; }},
      {"--grow-phase", [&] { o.grow_phase = true; }},
      {"--pregenerate", [&] { o.pregenerate = true; }},
      {"--help", [&] { o.help = true; }},
      {"-h", [&] { o.help = true; }},
  };

  ParseCommandLine<ConfigError>(args, flags, valued);
  if (o.help) return o;
  if (!have_modality) throw ConfigError("--modality: required (eels, eds, xrd or raman)");
  if (o.phases > MaxBasePhases(o.modality)) {
    throw ConfigError("--phases: " + std::string(ModalityName(o.modality)) + " has " +
                      std::to_string(MaxBasePhases(o.modality)) + " phases, got " + std::to_string(o.phases));
  }
  if (o.endpoint.empty()) throw ConfigError("--endpoint: required (e.g. tcp://127.0.0.1:5555)");
  if (o.roi_passes > 0 && (o.roi_x1 >= o.scan_width || o.roi_y1 >= o.scan_height)) {
    throw ConfigError("--roi: the region must lie inside the scan (" + std::to_string(o.scan_width) + "x" +
                      std::to_string(o.scan_height) + ")");
  }
  return o;
}

std::vector<std::pair<std::string, std::string>> ResolvedArguments(const SimOptions& o) {
  auto b = [](bool v) { return std::string(v ? "true" : "false"); };
  return {
      {"modality", ModalityName(o.modality)},
      {"channels", std::to_string(o.channels)},
      {"scan", std::to_string(o.scan_width) + "x" + std::to_string(o.scan_height)},
      {"passes", std::to_string(o.passes)},
      {"roi", std::to_string(o.roi_x0) + "," + std::to_string(o.roi_y0) + "," + std::to_string(o.roi_x1) + "," +
                  std::to_string(o.roi_y1)},
      {"roi_passes", std::to_string(o.roi_passes)},
      {"rate", Fmt(o.rate_spectra_per_s)},
      {"frame_spectra", std::to_string(o.FrameSpectra())},
      {"counts", Fmt(o.mean_counts)},
      {"readout_noise", Fmt(o.readout_noise_counts)},
      {"payload", PayloadName(o.payload)},
      {"energy_offset", std::isnan(o.energy_offset) ? "default" : Fmt(o.energy_offset)},
      {"dispersion", std::isnan(o.dispersion) ? "default" : Fmt(o.dispersion)},
      {"phases", std::to_string(o.phases)},
      {"inclusion", Fmt(o.inclusion_fraction)},
      {"grow_phase", b(o.grow_phase)},
      {"seed", std::to_string(o.seed)},
      {"energy_drift", Fmt(o.energy_drift_channels)},
      {"energy_drift_start", std::to_string(o.energy_drift_start_spectrum)},
      {"energy_drift_ramp", o.energy_drift_ramp_spectra < 0 ? "end" : std::to_string(o.energy_drift_ramp_spectra)},
      {"critical_dose", Fmt(o.critical_dose_e_per_A2)},
      {"beam_current_pA", Fmt(o.beam_current_pA)},
      {"dwell_us", Fmt(o.DwellUs())},
      {"pixel_A", Fmt(o.pixel_A)},
      {"endpoint", o.endpoint},
      {"socket", SocketName(o.socket)},
      {"series_id", o.SeriesId()},
      {"start_delay_s", Fmt(o.start_delay_s)},
      {"series_start", b(o.send_series_start)},
      {"hwm", std::to_string(o.send_hwm)},
      {"truth", o.truth_path},
      {"threads", std::to_string(o.generator_threads)},
      {"queue_frames", std::to_string(o.queue_frames)},
      {"pregenerate", b(o.pregenerate)},
  };
}

}  // namespace specwatch::sim
