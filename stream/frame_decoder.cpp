#include "stream/frame_decoder.hpp"

#include "frame.pb.h"

#include <cmath>
#include <cstring>

namespace specwatch::stream {

const char* ReasonLabel(RejectReason reason) {
  switch (reason) {
    case RejectReason::kPartCount: return "part_count";
    case RejectReason::kHeaderParse: return "header_parse";
    case RejectReason::kChannelMismatch: return "channel_mismatch";
    case RejectReason::kPayloadSize: return "payload_size";
    case RejectReason::kPayloadType: return "payload_type";
    case RejectReason::kBadValue: return "bad_value";
    case RejectReason::kDuplicateFrame: return "duplicate_frame";
    case RejectReason::kOutOfOrder: return "out_of_order";
    case RejectReason::kTooLarge: return "too_large";
    case RejectReason::kBadPositions: return "bad_positions";
    case RejectReason::kStageError: return "stage_error";
  }
  return "unknown";
}

namespace {

DecodeOutcome Reject(RejectReason reason, std::string detail, std::string series_id = {},
                     std::optional<uint64_t> frame_number = std::nullopt, uint64_t spectra = 0) {
  DecodeOutcome out;
  out.kind = DecodeOutcome::Kind::kRejected;
  out.rejection = Rejection{reason, std::move(detail), std::move(series_id), frame_number, spectra};
  return out;
}

std::string FrameName(const wire::FrameHeader& h) {
  return "frame " + std::to_string(h.frame_number()) + " of series '" + h.series_id() + "'";
}

size_t ElementBytes(wire::PayloadType t) {
  switch (t) {
    case wire::PAYLOAD_UINT16: return 2;
    case wire::PAYLOAD_UINT32: return 4;
    case wire::PAYLOAD_FLOAT32: return 4;
    default: return 0;
  }
}

EnergyAxis ToAxis(const wire::EnergyAxis& a) { return EnergyAxis{a.offset(), a.dispersion(), a.unit()}; }

SeriesInfo FromStart(const wire::SeriesStart& s) {
  SeriesInfo info;
  info.id = s.series_id();
  info.modality = static_cast<Modality>(s.modality());
  info.channel_count = s.channel_count();
  info.energy_axis = ToAxis(s.energy_axis());
  info.scan_shape = ScanShape{s.scan_shape().width(), s.scan_shape().height()};
  info.dwell_s = s.defaults().dwell_s();
  info.beam_current_pA = s.defaults().beam_current_pa();
  info.pixel_area_A2 = s.defaults().pixel_area_a2();
  info.passes = s.passes();
  info.announced = true;
  return info;
}

SeriesInfo FromFrame(const wire::FrameHeader& h) {
  SeriesInfo info;
  info.id = h.series_id();
  info.modality = static_cast<Modality>(h.modality());
  info.channel_count = h.channel_count();
  info.energy_axis = ToAxis(h.energy_axis());
  info.scan_shape = ScanShape{h.scan_shape().width(), h.scan_shape().height()};
  info.dwell_s = h.acquisition().dwell_s();
  info.beam_current_pA = h.acquisition().beam_current_pa();
  info.pixel_area_A2 = h.acquisition().pixel_area_a2();
  info.announced = false;
  return info;
}

bool ValidModality(int m) { return m >= 0 && m <= 4; }

}  // namespace

struct FrameDecoder::Impl {
  static DecodeOutcome DecodeFrame(FrameDecoder& self, const wire::FrameHeader& h,
                                   std::span<const std::byte> payload, uint64_t receive_index,
                                   double receive_time_s) {
    const uint64_t spectra = h.spectrum_count();
    const std::string name = FrameName(h);
    if (h.series_id().empty()) {
      return Reject(RejectReason::kHeaderParse, name + ": series_id is empty", h.series_id(),
                    h.frame_number(), spectra);
    }
    if (spectra == 0 || h.channel_count() == 0) {
      return Reject(RejectReason::kHeaderParse,
                    name + ": spectrum_count and channel_count must be > 0 (got " +
                        std::to_string(spectra) + ", " + std::to_string(h.channel_count()) + ")",
                    h.series_id(), h.frame_number(), spectra);
    }
    if (!ValidModality(h.modality())) {
      return Reject(RejectReason::kHeaderParse, name + ": unknown modality " + std::to_string(h.modality()),
                    h.series_id(), h.frame_number(), spectra);
    }
    const size_t element_bytes = ElementBytes(h.payload_type());
    if (element_bytes == 0) {
      return Reject(RejectReason::kPayloadType,
                    name + ": unknown payload type " + std::to_string(h.payload_type()), h.series_id(),
                    h.frame_number(), spectra);
    }
    const bool same_series = self.series_ && self.series_->id == h.series_id();
    if (same_series && self.series_->channel_count != 0 &&
        h.channel_count() != self.series_->channel_count) {
      return Reject(RejectReason::kChannelMismatch,
                    name + ": " + std::to_string(h.channel_count()) + " channels, series has " +
                        std::to_string(self.series_->channel_count),
                    h.series_id(), h.frame_number(), spectra);
    }
    const uint64_t channels = h.channel_count();
    const uint64_t expected_bytes = spectra * channels * element_bytes;
    if (payload.size() != expected_bytes) {
      return Reject(RejectReason::kPayloadSize,
                    name + ": payload has " + std::to_string(payload.size()) + " bytes, header says " +
                        std::to_string(spectra) + " x " + std::to_string(channels) + " x " +
                        std::to_string(element_bytes) + " = " + std::to_string(expected_bytes),
                    h.series_id(), h.frame_number(), spectra);
    }
    if (h.positions_size() != 0 && static_cast<uint64_t>(h.positions_size()) != spectra) {
      return Reject(RejectReason::kBadPositions,
                    name + ": " + std::to_string(h.positions_size()) + " positions for " +
                        std::to_string(spectra) + " spectra",
                    h.series_id(), h.frame_number(), spectra);
    }
    if (same_series && self.last_frame_number_) {
      const uint64_t last = *self.last_frame_number_;
      if (h.frame_number() == last) {
        return Reject(RejectReason::kDuplicateFrame, name + ": duplicate frame number", h.series_id(),
                      h.frame_number(), spectra);
      }
      if (h.frame_number() < last) {
        return Reject(RejectReason::kOutOfOrder,
                      name + ": arrived after frame " + std::to_string(last), h.series_id(),
                      h.frame_number(), spectra);
      }
    }
    if (h.has_energy_axis() && !(h.energy_axis().dispersion() > 0.0)) {
      return Reject(RejectReason::kHeaderParse, name + ": energy_axis.dispersion must be > 0",
                    h.series_id(), h.frame_number(), spectra);
    }

    auto batch = std::make_shared<SpectrumBatch>();
    batch->counts.resize(static_cast<Eigen::Index>(channels), static_cast<Eigen::Index>(spectra));
    batch->meta.integer_counts = h.payload_type() != wire::PAYLOAD_FLOAT32;
    float* dst = batch->counts.data();
    const size_t n = spectra * channels;
    switch (h.payload_type()) {
      case wire::PAYLOAD_UINT16: {
        Eigen::Map<const Eigen::Array<uint16_t, Eigen::Dynamic, 1>> src(
            reinterpret_cast<const uint16_t*>(payload.data()), static_cast<Eigen::Index>(n));
        Eigen::Map<Eigen::ArrayXf>(dst, static_cast<Eigen::Index>(n)) = src.cast<float>();
        break;
      }
      case wire::PAYLOAD_UINT32: {
        Eigen::Map<const Eigen::Array<uint32_t, Eigen::Dynamic, 1>> src(
            reinterpret_cast<const uint32_t*>(payload.data()), static_cast<Eigen::Index>(n));
        Eigen::Map<Eigen::ArrayXf>(dst, static_cast<Eigen::Index>(n)) = src.cast<float>();
        break;
      }
      default: {  // float32
        std::memcpy(dst, payload.data(), n * sizeof(float));
        Eigen::Map<const Eigen::ArrayXf> values(dst, static_cast<Eigen::Index>(n));
        if (!values.isFinite().all() || (values < 0.0f).any()) {
          Eigen::Index bad = 0;
          for (; bad < static_cast<Eigen::Index>(n); ++bad) {
            if (!std::isfinite(values[bad]) || values[bad] < 0.0f) break;
          }
          return Reject(RejectReason::kBadValue,
                        name + ": value " + std::to_string(values[bad]) + " at spectrum " +
                            std::to_string(bad / channels) + ", channel " + std::to_string(bad % channels),
                        h.series_id(), h.frame_number(), spectra);
        }
      }
    }

    DecodeOutcome out;
    out.kind = DecodeOutcome::Kind::kFrame;
    if (!same_series) {
      // A frame of a series we were not told about: open it from the header alone.
      self.series_ = FromFrame(h);
      self.last_frame_number_.reset();
      out.implicit_series_start = true;
    } else if (self.series_->channel_count == 0) {
      self.series_->channel_count = h.channel_count();
    }
    SeriesInfo& series = *self.series_;
    if (h.has_scan_shape() && h.scan_shape().width() > 0 && series.scan_shape.Positions() == 0) {
      series.scan_shape = ScanShape{h.scan_shape().width(), h.scan_shape().height()};
    }
    if (self.last_frame_number_) {
      out.missing_frames = h.frame_number() - *self.last_frame_number_ - 1;
    } else if (out.implicit_series_start || !series.announced) {
      out.missing_frames = 0;  // joined mid-series: earlier frames are not ours to count
    } else {
      out.missing_frames = h.frame_number();  // frames 0..n-1 of an announced series never came
    }
    self.last_frame_number_ = h.frame_number();
    out.series = series;

    FrameMeta& m = batch->meta;
    m.series_id = h.series_id();
    m.frame_number = h.frame_number();
    m.receive_index = receive_index;
    m.acquisition_time_s = h.acquisition_time_s();
    m.receive_time_s = receive_time_s;
    m.modality = h.modality() != wire::MODALITY_OTHER ? static_cast<Modality>(h.modality()) : series.modality;
    m.energy_axis = h.has_energy_axis() ? ToAxis(h.energy_axis()) : series.energy_axis;
    const auto& a = h.acquisition();
    m.dwell_s = a.dwell_s() > 0 ? a.dwell_s() : series.dwell_s;
    m.beam_current_pA = a.beam_current_pa() > 0 ? a.beam_current_pa() : series.beam_current_pA;
    m.pixel_area_A2 = a.pixel_area_a2() > 0 ? a.pixel_area_a2() : series.pixel_area_A2;
    m.scan_shape = series.scan_shape;

    batch->positions.resize(spectra);
    if (h.positions_size() != 0) {
      for (uint64_t i = 0; i < spectra; ++i) {
        const auto& p = h.positions(static_cast<int>(i));
        batch->positions[i] = ScanPosition{p.x(), p.y(), p.scan_pass()};
      }
    } else {
      const uint64_t per_pass = series.scan_shape.Positions();
      for (uint64_t i = 0; i < spectra; ++i) {
        const uint64_t index = h.start_index() + i;
        if (per_pass == 0) {
          batch->positions[i] = ScanPosition{static_cast<uint32_t>(index), 0, 0};  // shape unknown: one line
        } else {
          const uint64_t in_pass = index % per_pass;
          batch->positions[i] = ScanPosition{static_cast<uint32_t>(in_pass % series.scan_shape.width),
                                             static_cast<uint32_t>(in_pass / series.scan_shape.width),
                                             static_cast<uint32_t>(index / per_pass)};
        }
      }
    }
    out.batch = std::move(batch);
    return out;
  }
};

DecodeOutcome FrameDecoder::Decode(std::span<const zmq::message_t> parts, uint64_t receive_index,
                                   double receive_time_s) {
  // Parse the header first whatever else is wrong, so a rejection can name the frame and count its spectra.
  wire::DetectorMessage msg;
  const bool parsed = !parts.empty() &&
                      msg.ParseFromArray(parts[0].data(), static_cast<int>(parts[0].size())) &&
                      msg.body_case() != wire::DetectorMessage::BODY_NOT_SET;
  const bool is_frame = parsed && msg.body_case() == wire::DetectorMessage::kFrame;
  const std::string name = is_frame ? FrameName(msg.frame()) : std::string("message");
  const std::string series = is_frame ? msg.frame().series_id() : std::string();
  const std::optional<uint64_t> number =
      is_frame ? std::optional<uint64_t>(msg.frame().frame_number()) : std::nullopt;
  const uint64_t spectra = is_frame ? msg.frame().spectrum_count() : 0;

  uint64_t total = 0;
  for (const auto& p : parts) total += p.size();
  if (total > options_.max_message_bytes) {
    return Reject(RejectReason::kTooLarge,
                  name + " of " + std::to_string(total) + " bytes exceeds the limit of " +
                      std::to_string(options_.max_message_bytes),
                  series, number, spectra);
  }
  if (parts.empty() || parts.size() > 2) {
    return Reject(RejectReason::kPartCount,
                  name + " with " + std::to_string(parts.size()) + " parts (expected 1 or 2)", series, number,
                  spectra);
  }
  if (!parsed) {
    return Reject(RejectReason::kHeaderParse,
                  "first part (" + std::to_string(parts[0].size()) + " bytes) is not a DetectorMessage");
  }
  switch (msg.body_case()) {
    case wire::DetectorMessage::kFrame: {
      const auto& h = msg.frame();
      if (parts.size() != 2) {
        return Reject(RejectReason::kPartCount, FrameName(h) + ": frame without payload part", h.series_id(),
                      h.frame_number(), h.spectrum_count());
      }
      std::span<const std::byte> payload(static_cast<const std::byte*>(parts[1].data()), parts[1].size());
      return Impl::DecodeFrame(*this, h, payload, receive_index, receive_time_s);
    }
    case wire::DetectorMessage::kSeriesStart: {
      const auto& s = msg.series_start();
      if (parts.size() != 1) {
        return Reject(RejectReason::kPartCount, "series start with " + std::to_string(parts.size()) + " parts",
                      s.series_id());
      }
      if (s.series_id().empty() || !ValidModality(s.modality()) ||
          (s.has_energy_axis() && !(s.energy_axis().dispersion() > 0.0))) {
        return Reject(RejectReason::kHeaderParse,
                      "series start '" + s.series_id() + "': empty id, unknown modality or dispersion <= 0",
                      s.series_id());
      }
      series_ = FromStart(s);
      last_frame_number_.reset();
      DecodeOutcome out;
      out.kind = DecodeOutcome::Kind::kSeriesStart;
      out.series = *series_;
      return out;
    }
    case wire::DetectorMessage::kSeriesEnd: {
      const auto& e = msg.series_end();
      if (parts.size() != 1) {
        return Reject(RejectReason::kPartCount, "series end with " + std::to_string(parts.size()) + " parts",
                      e.series_id());
      }
      DecodeOutcome out;
      out.kind = DecodeOutcome::Kind::kSeriesEnd;
      out.series_end = SeriesEndInfo{e.series_id(), e.frames_sent(), e.spectra_sent()};
      // Frames lost after the last one received show only here: the detector says how many it sent.
      if (series_ && series_->id == e.series_id() && e.frames_sent() > 0) {
        const uint64_t seen_up_to = last_frame_number_ ? *last_frame_number_ + 1 : (series_->announced ? 0 : e.frames_sent());
        if (e.frames_sent() > seen_up_to) out.missing_frames = e.frames_sent() - seen_up_to;
      }
      return out;
    }
    default:
      return Reject(RejectReason::kHeaderParse, "unknown message body");
  }
}

}  // namespace specwatch::stream
