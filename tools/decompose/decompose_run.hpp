#pragma once
/// The offline run behind specwatch-decompose: the stream through the service's Session (RunSession: the model,
/// the events and the denoised output it reports); the operators' own speed, every spectrum learnt by a
/// StreamingModel in frame-sized pieces, then denoised with the final model, each timed on its own (steady_clock,
/// after an untimed warm-up: throughput figures only); and the batch SVD the streaming subspace is judged against. Plain functions on a D x N matrix of counts (column i =
/// spectrum i); only TimeDenoise and TimePipelined start threads (Denoise is stateless; the service runs it in
/// parallel too).

#include "operators/model/denoiser.hpp"
#include "operators/model/incremental_svd.hpp"
#include "operators/core/poisson_weighting.hpp"
#include "operators/core/spectrum_batch.hpp"
#include "operators/session/session.hpp"
#include "tools/sim/sim_options.hpp"

#include <memory>
#include <vector>

namespace specwatch::tools {

struct ModelSettings {
  SubspaceOptions subspace;
  WeightingOptions weighting;
  int frame_spectra = 64;  ///< spectra per Add / Denoise call
};

/// The simulator's counts for `options` (its uint16 payload, as float), D x N in raster order.
/// Throws sim::ConfigError for inconsistent options.
CountsMatrix SimulateCounts(const sim::SimOptions& options);

struct LearnResult {
  std::shared_ptr<const PcaModel> model;  ///< the model after the last timed run (flushed)
  std::vector<double> seconds;            ///< per timed run: every Add and the final Flush
  uint64_t rejected_blocks = 0;
};

/// Learns min(N, warmup_spectra) spectra untimed with a throwaway model, then `repeat` times every spectrum
/// with a fresh model. Throws ConfigError for bad settings.
LearnResult LearnAll(const CountsMatrix& counts, const ModelSettings& settings, int repeat, int warmup_spectra);

/// Seconds to denoise all spectra, frame by frame, on `threads` threads over disjoint contiguous frame ranges
/// (each thread has its own DenoiseResult, reused across frames), once per repeat. Untimed first: one frame per
/// thread, and min(N, warmup_spectra) spectra on the calling thread.
std::vector<double> TimeDenoise(const PcaModel& model, const CountsMatrix& counts, int frame_spectra, int threads,
                                int repeat, int warmup_spectra);

/// Seconds for the update and denoise running at once on two threads, as the service runs them (the update off
/// the publishing path): this thread learns every frame in order with a fresh model (Add, then Flush), a second
/// one denoises each frame with the newest model that has learnt every frame before it (StreamingModel::Model()).
/// The update never waits for denoise; denoise waits for the update when it catches up. Once per repeat (the warm-up
/// is LearnAll's and TimeDenoise's).
std::vector<double> TimePipelined(const CountsMatrix& counts, const ModelSettings& settings, int repeat);

/// The stream through the service's Session (operators/session), in order, as the service runs it: each frame of
/// `frame_spectra` spectra scored, consumed, learnt (every frame, model_updates "all"), then, once the series has
/// ended, every frame scored again with the final model for the denoised output. One code path with the service:
/// what this reports is what the service would have published.
struct SessionRun {
  std::shared_ptr<const PcaModel> model;  ///< after the series end (flushed)
  CountsMatrix denoised;                  ///< D x N, with the final model (Session::Score)
  SessionStatus status;                   ///< at the end
  uint64_t novel_spectra = 0, novelty_events = 0, regions = 0, residual_maps = 0, rank_changes = 0;
  uint64_t spectra_learnt = 0, spectra_excluded = 0;
  std::vector<uint8_t> learnt;            ///< per spectrum: 1 = the model learnt it (0: held out by the monitor)
  std::vector<std::pair<std::string, uint64_t>> drift_events;  ///< by kind, in order of first appearance
  double seconds = 0;
};
/// `scan`: positions in raster order over it (0 x 0: unknown, no pass maps); `integer_counts`: the payload was
/// integer counts (the Poisson weighting of "auto").
SessionRun RunSession(const CountsMatrix& counts, const SessionOptions& options, int frame_spectra, ScanShape scan,
                      Modality modality, bool integer_counts);

/// The streaming subspace against a batch SVD of the same data.
struct BatchCheck {
  Eigen::VectorXd singular_values;            ///< batch, the model's k_max largest
  std::vector<double> max_angle_deg_by_rank;  ///< entry k-1: largest principal angle between the top-k subspaces
  std::vector<double> principal_angles_deg;   ///< all angles at k = model rank, increasing
  double seconds = 0;                         ///< covariance + eigen-decomposition
};

/// Batch reference in double: x̃ = x / sqrt(a_i b_j) (a_i = spectrum total floored at 1, b_j = channel_scale²;
/// x̃ = x for an unweighted model), centred on its own mean. The eigenvectors of the D x D covariance Σ x̃ x̃ᵀ
/// are the right singular vectors of the centred data, their eigenvalues the squared singular values.
/// Independent of the operators' code (only the model's channel_scale is taken). O(N D² + D³).
BatchCheck CheckAgainstBatch(const PcaModel& model, const CountsMatrix& counts);

/// The columns of `counts` whose `keep` entry is 1 (the spectra a session learnt, for the batch reference).
CountsMatrix SelectSpectra(const CountsMatrix& counts, const std::vector<uint8_t>& keep);

double Median(std::vector<double> values);

}  // namespace specwatch::tools
