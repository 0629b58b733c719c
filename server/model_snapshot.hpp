#pragma once
/// Model snapshots (proto/README.md 3.5 and 3.9): a PcaModel as the "snapshot" message, in counts, and back;
/// snapshot files (a recording of snapshot messages) written by the control command save_model and read at
/// start for `initial_model`.
///
/// Pure functions of their arguments plus file I/O; any thread.

#include "operators/model/incremental_svd.hpp"
#include "operators/core/spectrum_batch.hpp"
#include "results.pb.h"
#include "server/service_options.hpp"
#include "stream/result_codec.hpp"

#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace specwatch::server {

/// Fills a snapshot message from a model (stream/result_codec.hpp, where results become protobuf).
using stream::FillSnapshot;

/// The model a snapshot describes, in the space it was learnt in (the weighting undone from the payload),
/// ready for StreamingModel::Restore. `payload` is the raw payload part. Throws ConfigError saying what is
/// wrong: nothing learnt, sizes that disagree, non-finite values, a weighted snapshot without channel_scale,
/// eigenspectra that are not orthonormal in the model's space.
PcaModel ModelFromSnapshot(const wire::ModelSnapshot& snapshot, std::span<const std::byte> payload);

/// One snapshot message as stored in a file.
struct SnapshotRecord {
  wire::Envelope envelope;  ///< body: snapshot
  std::string payload;      ///< raw payload part
};

/// The last "snapshot" message of a recording (specwatch-tap --record, or save_model). Throws ConfigError
/// naming the file: unreadable, not a recording, no snapshot message in it.
SnapshotRecord ReadSnapshotFile(const std::string& path);

/// Writes one snapshot message as a recording, replacing `path` atomically (written beside it, then renamed).
/// Throws std::runtime_error with the path and the system's reason.
void WriteSnapshotFile(const std::string& path, const wire::Envelope& envelope, std::span<const float> payload);

/// A model to start from, read and checked at start.
struct InitialModel {
  std::string path;
  std::shared_ptr<const PcaModel> model;
  EnergyAxis energy_axis;  ///< the axis of the series the snapshot was taken in
  std::string series_id;
};

/// Reads options.initial_model and checks it against the options: it must hold a learnt model whose rank is
/// at most pca.rank, whose channel count fits pca (rank + oversample <= channels) and whose weighting agrees
/// with pca.weighting ("none" refuses a weighted model, "poisson" an unweighted one; "auto" takes the
/// model's). Throws ConfigError starting with "initial_model <path>: ".
InitialModel LoadInitialModel(const ServiceOptions& options);

}  // namespace specwatch::server
