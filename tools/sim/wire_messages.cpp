#include "tools/sim/wire_messages.hpp"

namespace specwatch::sim {

namespace {

void FillAxis(const EnergyAxis& a, wire::EnergyAxis* out) {
  out->set_offset(a.offset);
  out->set_dispersion(a.dispersion);
  out->set_unit(a.unit);
}

void FillAcquisition(const Simulator& sim, wire::Acquisition* out) {
  const SimOptions& o = sim.Options();
  out->set_dwell_s(o.DwellUs() * 1e-6);
  out->set_beam_current_pa(o.beam_current_pA);
  out->set_pixel_area_a2(o.pixel_A * o.pixel_A);
}

void FillScan(const Simulator& sim, wire::ScanShape* out) {
  out->set_width(sim.Options().scan_width);
  out->set_height(sim.Options().scan_height);
}

}  // namespace

wire::Modality WireModality(Modality m) {
  switch (m) {
    case Modality::kEels: return wire::MODALITY_EELS;
    case Modality::kEds: return wire::MODALITY_EDS;
    case Modality::kXrd: return wire::MODALITY_XRD;
    case Modality::kRaman: return wire::MODALITY_RAMAN;
    default: return wire::MODALITY_OTHER;
  }
}

wire::PayloadType WirePayload(PayloadKind p) {
  switch (p) {
    case PayloadKind::kUint16: return wire::PAYLOAD_UINT16;
    case PayloadKind::kUint32: return wire::PAYLOAD_UINT32;
    case PayloadKind::kFloat32: return wire::PAYLOAD_FLOAT32;
  }
  return wire::PAYLOAD_UNSPECIFIED;
}

wire::SeriesStart MakeSeriesStart(const Simulator& sim, double start_time_s) {
  const SimOptions& o = sim.Options();
  wire::SeriesStart s;
  s.set_series_id(o.SeriesId());
  s.set_modality(WireModality(o.modality));
  s.set_channel_count(static_cast<uint32_t>(o.channels));
  s.set_payload_type(WirePayload(o.payload));
  FillAxis(sim.Axis(), s.mutable_energy_axis());
  FillScan(sim, s.mutable_scan_shape());
  FillAcquisition(sim, s.mutable_defaults());
  s.set_passes(o.passes);
  s.set_start_time_s(start_time_s);
  return s;
}

wire::FrameHeader MakeFrameHeader(const Simulator& sim, const FrameInfo& frame, double acquisition_time_s) {
  const SimOptions& o = sim.Options();
  wire::FrameHeader h;
  h.set_series_id(o.SeriesId());
  h.set_frame_number(frame.frame_number);
  h.set_acquisition_time_s(acquisition_time_s);
  h.set_modality(WireModality(o.modality));
  h.set_channel_count(static_cast<uint32_t>(o.channels));
  h.set_spectrum_count(frame.spectrum_count);
  h.set_payload_type(WirePayload(o.payload));
  FillAxis(sim.Axis(), h.mutable_energy_axis());
  FillAcquisition(sim, h.mutable_acquisition());
  h.set_start_index(frame.start_index);
  if (frame.start_index + frame.spectrum_count > o.RasterSpectra()) {
    // Revisits of the region of interest are not in raster order: explicit positions.
    for (uint32_t i = 0; i < frame.spectrum_count; ++i) {
      const SpectrumPosition p = sim.Position(frame.start_index + i);
      auto* w = h.add_positions();
      w->set_x(p.x);
      w->set_y(p.y);
      w->set_scan_pass(p.pass);
    }
  }
  FillScan(sim, h.mutable_scan_shape());
  return h;
}

wire::SeriesEnd MakeSeriesEnd(const Simulator& sim, uint64_t frames_sent, uint64_t spectra_sent) {
  wire::SeriesEnd e;
  e.set_series_id(sim.Options().SeriesId());
  e.set_frames_sent(frames_sent);
  e.set_spectra_sent(spectra_sent);
  return e;
}

}  // namespace specwatch::sim
