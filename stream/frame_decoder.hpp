#pragma once
/// Turns received ZeroMQ messages into SpectrumBatch objects, validating every frame against the frame
/// contract (proto/README.md) and the current series. Never throws on bad input: a bad message becomes a
/// Rejection with a reason, so the caller can count it and go on.
///
/// Concurrency: stateful (series, last frame number); one thread calls Decode, in receive order.

#include "operators/core/spectrum_batch.hpp"

#include <zmq.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace specwatch::stream {

enum class RejectReason {
  kPartCount,        ///< wrong number of message parts for the message kind
  kHeaderParse,      ///< header is not a DetectorMessage, or a required field is missing/invalid
  kChannelMismatch,  ///< channel count differs from the series'
  kPayloadSize,      ///< payload bytes != spectra x channels x element size
  kPayloadType,      ///< unknown or unspecified payload type
  kBadValue,         ///< NaN, inf or negative value in a float payload
  kDuplicateFrame,   ///< frame number already seen in this series
  kOutOfOrder,       ///< frame number lower than one already seen in this series
  kTooLarge,         ///< message larger than the configured limit
  kBadPositions,     ///< explicit positions given but not one per spectrum
  kStageError,       ///< accepted, then a stage of the flow graph failed on it (specwatch_stage_errors_total)
};
inline constexpr RejectReason kAllRejectReasons[] = {
    RejectReason::kPartCount,   RejectReason::kHeaderParse,    RejectReason::kChannelMismatch,
    RejectReason::kPayloadSize, RejectReason::kPayloadType,    RejectReason::kBadValue,
    RejectReason::kDuplicateFrame, RejectReason::kOutOfOrder,  RejectReason::kTooLarge,
    RejectReason::kBadPositions, RejectReason::kStageError};

/// Stable label used in metrics and logs ("part_count", "header_parse", ...).
const char* ReasonLabel(RejectReason reason);

struct Rejection {
  RejectReason reason = RejectReason::kHeaderParse;
  std::string detail;        ///< human-readable, names the frame and what was wrong
  std::string series_id;     ///< empty when the header could not be parsed
  std::optional<uint64_t> frame_number;
  uint64_t spectra = 0;      ///< spectra the header declared (0 when unknown)
};

/// Series parameters from a SeriesStart message, or inferred from a frame header.
using SeriesInfo = specwatch::SeriesInfo;        // operators/core/spectrum_batch.hpp
using SeriesEndInfo = specwatch::SeriesEndInfo;

struct DecodeOutcome {
  enum class Kind { kFrame, kSeriesStart, kSeriesEnd, kRejected };
  Kind kind = Kind::kRejected;
  BatchPtr batch;                  ///< kFrame
  SeriesInfo series;               ///< kSeriesStart, or kFrame when it opened a series implicitly
  bool implicit_series_start = false;  ///< kFrame: this frame opened a series without a start message
  SeriesEndInfo series_end;        ///< kSeriesEnd
  Rejection rejection;             ///< kRejected
  uint64_t missing_frames = 0;     ///< kFrame: frame numbers skipped since the previous frame (a gap);
                                   ///< kSeriesEnd: frames the detector sent after the last one received
};

struct FrameDecoderOptions {
  uint64_t max_message_bytes = 256ull << 20;
};

class FrameDecoder {
 public:
  explicit FrameDecoder(FrameDecoderOptions options) : options_(options) {}

  /// Decodes one multipart message. `receive_index` is stored in the batch when accepted;
  /// `receive_time_s` too.
  DecodeOutcome Decode(std::span<const zmq::message_t> parts, uint64_t receive_index,
                       double receive_time_s);

  const std::optional<SeriesInfo>& series() const { return series_; }

 private:
  struct Impl;
  FrameDecoderOptions options_;
  std::optional<SeriesInfo> series_;
  std::optional<uint64_t> last_frame_number_;
};

}  // namespace specwatch::stream
