#include "tools/sim/truth_writer.hpp"

#include "tools/sim/dose.hpp"
#include "tools/sim/json_writer.hpp"

#include <charconv>
#include <cstdio>
#include <fstream>
#include <stdexcept>

namespace specwatch::sim {

namespace {

const char* RoleName(PhaseRole r) {
  switch (r) {
    case PhaseRole::kBase: return "base";
    case PhaseRole::kInclusion: return "inclusion";
    case PhaseRole::kGrow: return "grow";
  }
  return "";
}

/// Argument values that read as numbers or booleans are written as such, the rest as strings.
void ArgumentValue(JsonWriter& j, const std::string& v) {
  if (v == "true" || v == "false") {
    j.Bool(v == "true");
    return;
  }
  double d = 0.0;
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), d);
  if (!v.empty() && ec == std::errc() && p == v.data() + v.size()) {
    j.Number(d);
  } else {
    j.String(v);
  }
}

double Sum(const std::vector<double>& v) {
  double s = 0.0;
  for (double x : v) s += x;
  return s;
}

}  // namespace

void WriteTruthJson(const Simulator& sim, const std::vector<std::string>& command_line, std::ostream& out) {
  const SimOptions& o = sim.Options();
  const Scene& scene = sim.GetScene();
  const uint64_t pixels = scene.Pixels();
  JsonWriter j(out);
  j.BeginObject();
  j.Key("format").String("specwatch-sim-truth");
  j.Key("version").Integer(1);
  j.Key("command_line").BeginArray();
  for (const auto& a : command_line) j.String(a);
  j.EndArray();
  j.Key("arguments").BeginObject();
  for (const auto& [k, v] : ResolvedArguments(o)) {
    j.Key(k);
    ArgumentValue(j, v);
  }
  j.EndObject();

  j.Key("modality").String(ModalityName(o.modality));
  j.Key("series_id").String(o.SeriesId());
  j.Key("channels").Integer(o.channels);
  j.Key("scan").BeginObject().Key("width").Integer(o.scan_width).Key("height").Integer(o.scan_height).EndObject();
  j.Key("passes").Integer(o.passes);
  j.Key("roi").BeginObject();
  j.Key("x0").Integer(o.roi_x0).Key("y0").Integer(o.roi_y0).Key("x1").Integer(o.roi_x1).Key("y1").Integer(o.roi_y1);
  j.Key("passes").Integer(o.roi_passes);
  j.EndObject();
  j.Key("frame_spectra").Integer(o.FrameSpectra());
  j.Key("frames").Integer(static_cast<int64_t>(sim.FrameCount()));
  j.Key("spectra").Integer(static_cast<int64_t>(sim.SpectrumCount()));
  j.Key("spectrum_order").String(
      "raster across passes: index i = pass*width*height + y*width + x; frame k holds indices "
      "k*frame_spectra .. k*frame_spectra + spectrum_count - 1 (FrameHeader.start_index); after the full passes, "
      "roi.passes passes over the roi rectangle in raster order within it (pass numbers continuing), sent with "
      "explicit positions");
  j.Key("payload").String(PayloadName(o.payload));
  j.Key("mean_counts").Number(o.mean_counts);

  const EnergyAxis& axis = sim.Axis();
  j.Key("energy_axis").BeginObject();
  j.Key("offset").Number(axis.offset);
  j.Key("dispersion").Number(axis.dispersion);
  j.Key("unit").String(axis.unit);
  j.Key("values").BeginArray();
  for (int c = 0; c < o.channels; ++c) j.Number(axis.offset + axis.dispersion * c);
  j.EndArray();
  j.EndObject();

  j.Key("noise").BeginObject();
  j.Key("counts").String(
      "Poisson: each channel independent Poisson with the expected spectrum as mean (sum of independent "
      "Poissons over phases)");
  j.Key("readout_sigma_counts").Number(o.readout_noise_counts);
  j.Key("readout").String(
      "Gaussian from a 65536-entry table of stratified normal quantiles (tails cut at +-4.3 sigma, unit "
      "variance), added per channel; integer payloads rounded half up and clamped to [0, type max]");
  j.EndObject();

  // Phases: noiseless pure-phase spectra in expected counts per channel at zero shift, undamaged (and S∞).
  j.Key("phases").BeginArray();
  for (int p = 0; p < static_cast<int>(sim.Phases().size()); ++p) {
    const PhaseModel& m = sim.Phases()[p];
    const auto s0 = sim.PhaseSpectrum(p, false, 0);
    j.BeginObject();
    j.Key("index").Integer(p);
    j.Key("name").String(m.name);
    j.Key("role").String(RoleName(m.role));
    j.Key("description").String(m.description);
    j.Key("total_counts").Number(Sum(s0));
    j.Key("spectrum").NumberArray(s0);
    if (sim.DamageEnabled()) {
      const auto sd = sim.PhaseSpectrum(p, true, 0);
      j.Key("damage_description").String(m.damage_description);
      j.Key("damaged_total_counts").Number(Sum(sd));
      j.Key("damaged_spectrum").NumberArray(sd);
    } else {
      j.Key("damaged_spectrum").Null();
    }
    j.EndObject();
  }
  j.EndArray();

  j.Key("layout").BeginObject();
  j.Key("kind").String(
      "soft Voronoi: weight 1 - smoothstep((d_k - d_min) / (2*boundary_width_px)) per base phase, normalised; "
      "pure phases inside regions");
  j.Key("pixel_order").String("row-major: pixel = y*width + x");
  j.Key("boundary_width_px").Number(scene.BoundaryWidth());
  j.Key("seeds_px").BeginArray();
  for (const auto& [x, y] : scene.Seeds()) j.BeginArray().Number(x).Number(y).EndArray();
  j.EndArray();
  j.EndObject();

  // Abundances without the grow phase (pass-independent): one array of width*height per phase.
  j.Key("abundances").BeginObject();
  j.Key("note").String(
      "static map per phase index (inclusion applied, grow phase not applied: see grow_phase); sums to 1 per pixel");
  j.Key("values").BeginArray();
  for (int p = 0; p < scene.PhaseCount(); ++p) {
    j.BeginArray();
    for (uint64_t px = 0; px < pixels; ++px) j.Number(scene.StaticAbundance(px, p));
    j.EndArray();
  }
  j.EndArray();
  j.EndObject();

  if (scene.InclusionIndex() >= 0) {
    j.Key("inclusion").BeginObject();
    j.Key("phase_index").Integer(scene.InclusionIndex());
    j.Key("fraction_requested").Number(o.inclusion_fraction);
    j.Key("pixels").Integer(static_cast<int64_t>(scene.InclusionPixelCount()));
    j.Key("fraction_actual").Number(static_cast<double>(scene.InclusionPixelCount()) / static_cast<double>(pixels));
    j.Key("abundance_in_mask").Number(scene.InclusionAbundance());
    j.Key("clusters").String("random 4-connected clusters of 3..9 pixels");
    j.Key("mask").BeginArray();
    for (uint64_t px = 0; px < pixels; ++px) j.Integer(scene.InInclusion(px) ? 1 : 0);
    j.EndArray();
    j.EndObject();
  } else {
    j.Key("inclusion").Null();
  }

  if (scene.GrowIndex() >= 0) {
    j.Key("grow_phase").BeginObject();
    j.Key("phase_index").Integer(scene.GrowIndex());
    j.Key("rule").String(
        "in pass p: g = 0.5*(1 - tanh((r - R_p)/edge_px)), r = distance of the pixel centre (x+0.5, y+0.5) from "
        "centre_px, R_p = radius_px_per_pass[p] (g = 0 where R_p = 0); every other phase is scaled by 1 - g");
    j.Key("centre_px").BeginArray().Number(scene.GrowCentreX()).Number(scene.GrowCentreY()).EndArray();
    j.Key("edge_px").Number(scene.GrowEdge());
    j.Key("radius_px_per_pass").BeginArray();
    for (uint32_t p = 0; p < o.passes; ++p) j.Number(scene.GrowRadius(p));
    j.EndArray();
    j.Key("abundance_last_pass").BeginArray();
    for (uint32_t y = 0; y < o.scan_height; ++y) {
      for (uint32_t x = 0; x < o.scan_width; ++x) j.Number(scene.GrowAbundance(x, y, o.passes - 1));
    }
    j.EndArray();
    j.EndObject();
  } else {
    j.Key("grow_phase").Null();
  }

  j.Key("drift").BeginObject();
  j.Key("total_channels").Number(o.energy_drift_channels);
  j.Key("quantum_channels").Number(1.0 / Simulator::kShiftSubdivisions);
  j.Key("start_spectrum").Integer(static_cast<int64_t>(o.energy_drift_start_spectrum));
  j.Key("ramp_spectra").Integer(sim.DriftRampSpectra());
  j.Key("rule").String(
      "spectrum i shows its features shifted by shift(i) = 0 for i < start_spectrum, else "
      "round(16*total*min(1, (i-start_spectrum)/ramp_spectra))/16 channels (ramp_spectra 0: the whole total, a step; "
      "-1: no drift within the run; positive: to higher channels), i.e. linear in acquisition time over the ramp; "
      "the energy axis in the headers is not corrected");
  j.Key("change_points").BeginArray();
  for (const auto& [i, s] : sim.DriftChangePoints()) j.BeginArray().Integer(static_cast<int64_t>(i)).Number(s).EndArray();
  j.EndArray();
  j.EndObject();

  const double d = sim.DosePerSpectrum();
  j.Key("dose").BeginObject();
  j.Key("beam_current_pA").Number(o.beam_current_pA);
  j.Key("dwell_us").Number(o.DwellUs());
  j.Key("pixel_A").Number(o.pixel_A);
  j.Key("pixel_area_A2").Number(o.pixel_A * o.pixel_A);
  j.Key("electrons_per_spectrum").Number(ElectronsPerSpectrum(o.beam_current_pA, o.DwellUs()));
  j.Key("dose_per_spectrum_e_per_A2").Number(d);
  j.Key("dose_at_pass_start_e_per_A2").BeginArray();
  for (uint32_t p = 0; p < o.passes; ++p) j.Number(d * p);
  j.EndArray();
  j.Key("accumulated_dose_e_per_A2").BeginArray();  // after the last pass, per pixel (row-major)
  for (uint64_t px = 0; px < pixels; ++px) {
    const auto x = static_cast<uint32_t>(px % o.scan_width), y = static_cast<uint32_t>(px / o.scan_width);
    j.Number(d * (o.passes + (o.InRoi(x, y) ? o.roi_passes : 0)));
  }
  j.EndArray();
  j.EndObject();

  j.Key("damage").BeginObject();
  j.Key("enabled").Bool(sim.DamageEnabled());
  j.Key("critical_dose_e_per_A2").Number(o.critical_dose_e_per_A2);
  j.Key("rule").String(
      "S(D) = S_inf + (S0 - S_inf)*exp(-D/Dc) with D the dose the position has received; the spectrum of visit p "
      "integrates it over the dwell: S_inf + w_p*(S0 - S_inf), w_p = (Dc/d)*(exp(-p*d/Dc) - exp(-(p+1)*d/Dc))");
  j.Key("intact_weight_per_pass").BeginArray();
  for (uint32_t p = 0; p < o.passes; ++p) j.Number(sim.IntactWeight(p));
  j.EndArray();
  j.EndObject();

  j.EndObject();
  out << '\n';
}

void WriteTruthFile(const Simulator& sim, const std::vector<std::string>& command_line, const std::string& path) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) throw std::runtime_error("--truth: cannot write " + tmp);
    WriteTruthJson(sim, command_line, f);
    f.flush();
    if (!f) throw std::runtime_error("--truth: write failed for " + tmp);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) throw std::runtime_error("--truth: cannot rename to " + path);
}

}  // namespace specwatch::sim
