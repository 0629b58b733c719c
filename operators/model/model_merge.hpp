#pragma once
/// Merging two streaming models into one (docs/science.md §13, "scale-out"): what lets several workers, each
/// running its own IncrementalSvd on part of a stream, share one model of the whole.
///
/// A PcaModel summarises its spectra by (mean μ, count n, centred scatter C ≈ U diag(s²) Uᵀ, trace(C)). The
/// scatter of the union of two sets of spectra is exactly (Chan et al. pairwise update)
///   C = C_a + C_b + (n_a n_b / n) (μ_a − μ_b)(μ_a − μ_b)ᵀ,   n = n_a + n_b,
/// so its leading singular triplets are those of the D x (k_a + k_b + 1) matrix
///   X = [U_a diag(s_a), U_b diag(s_b), sqrt(n_a n_b / n) (μ_a − μ_b)].
/// Up to the components each model had already truncated, merging A and B gives the model of the concatenated
/// spectra; with forgetting, once both are brought to a common clock with DecayModel. What is truncated is lost
/// for good, as in one tracker: e.g. the noise each model had along μ_a − μ_b, or along a component only the
/// other one holds, so such a component comes out short by ≈ n σ² in s² (2σ²/|μ_a − μ_b|² relative for s).
///
/// Pure functions of immutable snapshots: any thread, concurrently with anything (including the IncrementalSvd
/// that published the inputs). Not for the data path: a merge costs O(D (k_a + k_b + 1)²) flops in double and
/// allocates.

#include "operators/model/incremental_svd.hpp"

namespace specwatch {

/// How the merged model is truncated and ranked: the same meaning as the fields of SubspaceOptions, so a
/// merged model looks like one an IncrementalSvd with these options would publish.
struct MergeOptions {
  int rank = 8;                            ///< components used to denoise (K); with auto_rank, the most allowed
  int oversample = 8;                      ///< extra kept components; k_max = rank + oversample
  bool auto_rank = false;                  ///< rank from the Gavish–Donoho threshold (rank_selection.hpp)
  int rank_min = 1;                        ///< auto_rank: the fewest components used
  double channel_scale_tolerance = 1e-6;   ///< largest |scale_a − scale_b| / max|scale_a| of mergeable models

  /// The truncation and rank rule of a tracker with these options (the usual way to build MergeOptions).
  static MergeOptions From(const SubspaceOptions& subspace);
  int MaxComponents() const { return rank + oversample; }  ///< k_max
  /// Throws ConfigError naming the field ("rank ..."; operators/core/config_error.hpp) when out of range.
  void Validate() const;
};

/// The model `spectra_elapsed` spectra later on the model's own clock, with no new spectra: the weight of every
/// past spectrum is multiplied by λ^Δ, the convention of IncrementalSvd (C ← λ^b C per block of b spectra). λ is
/// the per-spectrum forgetting factor, 1 − 1/effective_memory (effective_memory 0: λ = 1, nothing decays).
/// Δ = spectra_elapsed counts spectra as they arrive (not decayed, not necessarily whole blocks):
///   s ← λ^{Δ/2} s,  spectra_seen ← λ^Δ spectra_seen,  total_variance ← λ^Δ total_variance,
///   noise_sigma and rank_threshold recomputed from them as IncrementalSvd does;
///   mean, basis, rank, version, effective_memory and channel_scale kept: nothing a denoiser uses changes.
///   (DecayModel has no options, so it cannot re-rank; under auto_rank the count above τ stays the same while
///   spectra_seen ≥ D, where σ does not change and s and τ both scale by λ^{Δ/2}.)
/// To merge model A of an earlier stretch of the stream with model B learnt over the n_B spectra that followed
/// it (each tracker started fresh): MergeModels(DecayModel(A, n_B), B). This is exact when the blocks of the
/// trackers line up with those of one tracker over the whole stream (both stretches whole blocks).
/// Throws std::invalid_argument if spectra_elapsed is negative or not finite.
PcaModel DecayModel(const PcaModel& model, double spectra_elapsed);

/// The model of the spectra of `a` and `b` together, both on the same clock (see DecayModel):
///   QR of X (above) in double, X = Q R; SVD of the small R = Ũ S̃ Ṽᵀ; basis = Q Ũ[:, :k'], s = S̃[:k'],
///   with k' <= options.MaxComponents() (components at the float rounding level of the inputs are dropped);
///   mean = (n_a μ_a + n_b μ_b) / n,  spectra_seen = n = n_a + n_b,
///   total_variance = tv_a + tv_b + (n_a n_b / n) ||μ_a − μ_b||²;
///   rank, noise_sigma and rank_threshold from the options exactly as IncrementalSvd's update computes them;
///   version = max(a.version, b.version) + 1 (above both, so a merged model supersedes either input wherever
///   versions are compared; versions order the models of one publisher only); effective_memory and
///   channel_scale of the inputs.
/// An empty model (spectra_seen == 0) is the identity: the result is the other model (its basis, mean, singular
/// values and totals bit for bit), cut to k_max and ranked by the options (so unchanged if they are the options
/// it was learnt with), with the version above. Its channel_scale and effective_memory are not compared: it
/// holds no data in any weighted space (a worker still calibrating its weights has no scale yet).
/// Requires (std::invalid_argument otherwise, naming what differs; a caller bug, not a data problem): the same
/// channel count; and unless one model is empty, the same channel_scale (both empty, or within
/// options.channel_scale_tolerance relative to the largest entry) and the same effective_memory (relative 1e-9:
/// a merged model has one forgetting factor). Throws ConfigError when the options are invalid.
PcaModel MergeModels(const PcaModel& a, const PcaModel& b, const MergeOptions& options);

}  // namespace specwatch
