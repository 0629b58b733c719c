#pragma once
/// The encoding twin of frame_decoder: the only place results become protobuf. A Session's results
/// (operators/session/session_events.hpp) go in, [topic][Envelope][payload] come out, as proto/README.md
/// specifies each topic. Nothing is read back from an envelope: the envelopes are write-only.
///
/// Pure functions of their arguments; any thread (the flow graph encodes denoised messages on many threads).

#include "operators/model/incremental_svd.hpp"
#include "operators/session/session.hpp"
#include "operators/session/session_events.hpp"
#include "results.pb.h"
#include "stream/result_publisher.hpp"

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace specwatch::stream {

/// One message to publish.
struct EncodedMessage {
  std::string topic;
  std::shared_ptr<wire::Envelope> envelope;
  Payload payload;
};

class ResultCodec {
 public:
  /// `omit_denoised_spectra`: denoised_payload "scores" (the spectra are rebuilt by clients from the scores and the
  /// snapshot of the model version, published before its first use).
  explicit ResultCodec(bool omit_denoised_spectra) : omit_denoised_spectra_(omit_denoised_spectra) {}

  /// The frame's "denoised" message: positions, scores, residuals and (unless omitted) the reconstruction, which
  /// travels as the payload without a copy (it keeps `scores` alive).
  EncodedMessage Denoised(const SpectrumBatch& batch, const FrameScoresPtr& scores) const;
  /// The message of a session event; nullopt for events that are not messages on their own (the denoised marker,
  /// notices, model versions and due snapshots: snapshots are built by the publisher with Snapshot below).
  std::optional<EncodedMessage> Encode(const SeriesEvent& event) const;

  /// The advice as the control reply carries it (and the advice topic's body).
  static wire::AcquisitionAdvice Advice(const AdviceEvent& advice);

 private:
  bool omit_denoised_spectra_;
};

wire::EnergyAxis ToWire(const EnergyAxis& axis);

/// Fills `out` from `model` and returns the payload: (1 + rank) x channels float32, the mean then the
/// eigenspectra, brought back to counts for a weighted model. Empty for a model that has learnt nothing.
std::shared_ptr<std::vector<float>> FillSnapshot(const PcaModel& model, const std::string& reason,
                                                 const EnergyAxis& energy_axis, wire::ModelSnapshot* out);

/// The plain facts a status message states (proto/README.md, Status), gathered by the service.
struct StatusFacts {
  std::string state;  ///< "running", "frozen", "stopping"
  std::string series_id;
  bool series_started = false;
  uint64_t frames_received = 0, spectra_received = 0, spectra_published = 0;
  uint64_t frames_rejected = 0, spectra_rejected = 0, sequence_gaps = 0;
  uint32_t rank = 0;
  uint64_t model_version = 0;
  double uptime_s = 0.0;
  std::vector<std::pair<std::string, uint64_t>> published;  ///< per topic
  uint32_t frames_in_flight = 0;
  uint64_t spectra_in_model = 0;
  uint64_t publisher_epoch = 0;
  uint64_t model_spectra_skipped = 0;
  SessionStatus session;
};
wire::Status EncodeStatus(const StatusFacts& facts);
/// The "status" message of those facts.
EncodedMessage StatusMessage(const StatusFacts& facts);
/// The "snapshot" message of `model` (FillSnapshot's body and payload), as of series `series_id` on `axis`.
EncodedMessage SnapshotMessage(const PcaModel& model, const std::string& reason, const std::string& series_id,
                               const EnergyAxis& axis);

}  // namespace specwatch::stream
