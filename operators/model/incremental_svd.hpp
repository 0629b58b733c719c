#pragma once
/// Streaming PCA: a block incremental thin SVD of mean-centred spectra (docs/science.md §3).
///
/// IncrementalSvd is the stateful stage: one thread feeds it spectra in frame order. After every update it
/// publishes an immutable PcaModel snapshot; Model() hands out the latest one and may be called from any thread
/// at any time, so denoising stages running on many threads never wait for an update.

#include <Eigen/Core>
#include <Eigen/Eigenvalues>

#include <cstdint>
#include <memory>
#include <string>
#include <mutex>

namespace specwatch {

/// The rank hysteresis holds a rank only once it was estimated from this many spectra per tracked component
/// (128 at k_max = 16): below, σ comes from fewer than ~7·k_max free dimensions and the rank is noise.
constexpr double kRankHysteresisMinSpectraPerComponent = 8.0;

/// Options of the streaming subspace tracker (config section "pca").
struct SubspaceOptions {
  int rank = 8;                       ///< components used to denoise (K); with auto_rank, the most allowed
  int oversample = 8;                 ///< extra tracked components; k_max = rank + oversample
  int block = 32;                     ///< spectra accumulated per update
  double forgetting = 1.0;            ///< per spectrum, (0, 1]; N_eff = 1/(1-forgetting); 1 = infinite memory
  int reorthonormalize_every = 1000;  ///< updates between QR re-orthonormalisations of U
  bool auto_rank = false;             ///< rank from the Gavish–Donoho threshold (rank_selection.hpp)
  int rank_min = 1;                   ///< auto_rank: the fewest components used
  /// auto_rank: a component joins the rank when its singular value passes τ·(1 + h) and leaves it when it falls
  /// below τ·(1 − h), h = rank_hysteresis: one component hovering at τ must not flip the rank (and with it the
  /// novelty thresholds, recalibrated at every rank change) at each update.
  double rank_hysteresis = 0.1;  ///< applied once the model has seen kRankHysteresisMinSpectraPerComponent·k_max
  /// The first fit (StreamingModel, first_fit_screen.hpp): spectra of the first block that carry a component
  /// supported by fewer spectra than this (leverage > 1 / min_component_support) are held out of it, so the
  /// model is not born explaining a rare spectrum. 0: off.
  int min_component_support = 10;

  /// A numerical choice, not a config field: an update leaves the residual R = C − U P implicit (RᵀR = CᵀC − PᵀP,
  /// R never formed, one GEMM fewer) when R holds more than this share of the block's centred variance, so the
  /// cancellation costs at most a factor 1/share of relative accuracy. > 1 forms R always (tests compare the two).
  double implicit_residual_min_fraction = 0.25;

  int MaxComponents() const { return rank + oversample; }  ///< k_max
  /// Throws ConfigError naming the field ("rank ...") unless the options are valid for some channel count.
  void Validate() const;
  /// Why the options cannot model spectra of `channels` channels ("" when they can): a property of the data,
  /// asked on the data path without throwing.
  std::string ChannelProblem(int channels) const;
  /// Validate() and ChannelProblem(channels); throws ConfigError.
  void Validate(int channels) const;
};

/// Immutable model snapshot; shared between threads via std::shared_ptr<const PcaModel>.
/// It describes the (exponentially weighted) spectra seen so far: their mean, and the leading singular
/// triplets of their centred data, C = Σ w_i (x_i − mean)(x_i − mean)ᵀ ≈ basis · diag(s²) · basisᵀ.
struct PcaModel {
  Eigen::VectorXf mean;             ///< D; zero before any spectrum was seen
  Eigen::MatrixXf basis;            ///< D x k (k <= k_max), orthonormal columns, decreasing singular value
  Eigen::VectorXd singular_values;  ///< k, decreasing
  double spectra_seen = 0;          ///< n (decayed by forgetting)
  double total_variance = 0;        ///< decayed sum of squared centred norms, trace(C) (for explained variance)
  uint64_t version = 0;             ///< number of updates applied since construction or Reset()
  int rank = 0;                     ///< components to use for denoising: min(options.rank, k), or with
                                    ///< auto_rank the count above rank_threshold within [rank_min, rank]
  double noise_sigma = 0;           ///< noise per entry estimated from the untracked energy (0: unknown)
  double rank_threshold = 0;        ///< Gavish–Donoho τ for the singular values (0: not computed)
  double effective_memory = 0;      ///< N_eff in spectra, 0 = infinite
  /// Poisson weighting (poisson_weighting.hpp): sqrt(b_j), D entries, when the model was learnt from
  /// x̃ = x / sqrt(a_i b_j); empty when it was learnt from the data as they are. mean and basis live in the
  /// weighted space then.
  Eigen::VectorXf channel_scale;

  bool Weighted() const { return channel_scale.size() > 0 && channel_scale.size() == mean.size(); }

  /// s_i² / total_variance for the first `rank` components (zeros if total_variance is 0).
  Eigen::VectorXd ExplainedVarianceRatio() const;
};

/// noise_sigma and rank_threshold of a model whose basis, singular values, spectra_seen and total_variance are
/// set: σ from the energy outside the tracked components, τ the Gavish–Donoho threshold (rank_selection.hpp).
void EstimateNoise(PcaModel& model);
/// EstimateNoise, then the rank: min(rank, k), or with auto_rank the count above τ within [rank_min, rank].
/// With a previous rank (>= 0) and hysteresis h, auto_rank keeps the previous rank unless the count above τ·(1+h)
/// is larger (then that) or the count above τ·(1−h) is smaller (then that).
/// The one rule every model is ranked by (IncrementalSvd after each update, MergeModels).
void EstimateNoiseAndRank(PcaModel& model, int rank, bool auto_rank, int rank_min, int previous_rank = -1,
                          double hysteresis = 0.0);

/// Block incremental thin SVD (Brand 2006 / Ross et al. 2008) with mean update (as sklearn IncrementalPCA) and
/// exponential forgetting. Per update of b spectra B, with state (U, s, mean, n):
///   decay s ← λ^{b/2} s, n ← λ^b n; centre the block on its mean as b − 1 columns (a Householder reflection
///   drops the exact zero column centring leaves) and append sqrt(n·b/(n+b))·(mean − mean_B);
///   P = Uᵀ B;  R = B − U P = Q_r R_r by Cholesky QR of RᵀR = L Lᵀ (R_r = Lᵀ), or, when RᵀR is rank-deficient or
///   ill-conditioned, from its eigen-decomposition V Λ Vᵀ (R_r = Λ^{1/2}Vᵀ); Q_r is never formed;
///   SVD of M = [[diag(s), P], [0, R_r]] = Ũ S̃ Ṽᵀ; U ← [U Q_r] Ũ[:, :k'], s ← S̃[:k'], with k' <= k_max
///   (components at float rounding level are dropped).
/// Cost per spectrum O(D·k_max·(1 + k_max/b) + D·b) flops, all in float GEMMs, plus per update a b x b Cholesky
/// (or eigenproblem) and one (k_max + b)² eigenproblem in double, now the largest single cost.
///
/// Concurrency: Add/Flush/Reset must be called by one thread at a time (a serial flow-graph stage).
/// Model() may be called from any thread, concurrently with them. Neither copyable nor movable.
/// Data path: spectra must have `channels` rows (std::invalid_argument otherwise, a caller bug); a block holding
/// non-finite values (or, in theory, whose small eigenproblem does not converge) is dropped whole, leaving the
/// model unchanged, and counted in rejected_blocks().
class IncrementalSvd {
 public:
  IncrementalSvd(int channels, SubspaceOptions options);  ///< throws ConfigError (options.Validate)
  IncrementalSvd(const IncrementalSvd&) = delete;
  IncrementalSvd& operator=(const IncrementalSvd&) = delete;

  /// D x m spectra, any m >= 0. Buffers them and runs an update every `block` spectra.
  void Add(const Eigen::Ref<const Eigen::MatrixXf>& spectra);
  /// Runs an update with whatever is buffered (no-op if nothing is).
  void Flush();
  /// Forgets everything, including buffered spectra; publishes the empty model.
  void Reset();
  /// The spectra given to Add are weighted with this scale (PcaModel::channel_scale, D entries; empty: not
  /// weighted): recorded in every model published from now on. Only while nothing was learnt since the last
  /// Reset (std::logic_error otherwise); survives Reset.
  void SetChannelScale(const Eigen::VectorXf& channel_scale);
  /// Re-expresses everything learnt, and the buffered spectra, for data weighted with a new channel scale
  /// (docs/science.md §2: U ← orth(diag(f)·U)): f = old scale / new scale per channel (D entries), so a spectrum
  /// weighted the old way, multiplied by f, is weighted the new way. Exact for the mean and the tracked
  /// components (thin QR of diag(f)·U·diag(s), then a k x k SVD); the untracked energy, known only as a total, is
  /// scaled by the harmonic mean of f² (exact when the new scale makes that residual uniform across channels,
  /// which is what a right b does to noise). Publishes a new version. Same thread as Add.
  void RescaleChannels(const Eigen::VectorXf& factor, const Eigen::VectorXf& new_channel_scale);
  /// Re-expresses everything learnt on an energy axis shifted by delta_channels (features that were at channel
  /// j are at j + delta; docs/science.md §7.1, "shift the model, not the counts"): v'(j) = v(j − delta) by cubic
  /// interpolation (ShiftByCubic, energy_shift.hpp) of the mean and the channel scale (beyond the ends: the edge
  /// value) and of basis · diag(s) (beyond the ends: zero), then a thin QR and a k x k SVD as RescaleChannels.
  /// The untracked energy, known only as a total, is kept. Buffered spectra are not moved: they are counts
  /// measured on the axis as it is, already drifted (interpolating counts would break their statistics).
  /// Publishes a new version. Same thread as Add.
  void ShiftChannels(double delta_channels);

  /// Latest snapshot (cheap: copies a pointer replaced after each update, under a short lock). Never null.
  std::shared_ptr<const PcaModel> Model() const;
  const SubspaceOptions& options() const { return options_; }
  int channels() const { return channels_; }
  int buffered() const { return buffered_; }                   ///< spectra waiting for the next update
  uint64_t rejected_blocks() const { return rejected_blocks_; }  ///< blocks dropped, never reset
  /// Updates that left the residual implicit (most of the block outside span(U), as for noisy spectra), never
  /// reset: the others formed it explicitly. A diagnostic for tests and benchmarks.
  uint64_t implicit_residual_updates() const { return implicit_residual_updates_; }
  /// Continues from `model` (e.g. a snapshot loaded from a file): its mean, basis (re-orthonormalised),
  /// singular values, spectra_seen, total_variance, version, rank, noise estimates and channel_scale become
  /// the state, buffered spectra are dropped; effective_memory and later ranks follow these options.
  /// Requires mean and basis of channels() rows, k <= k_max basis columns with k singular values, and a
  /// channel_scale of 0 or channels() entries (std::invalid_argument otherwise). Defined in model_restore.cpp.
  void Restore(const PcaModel& model);

 private:
  void Update(const Eigen::Ref<const Eigen::MatrixXf>& block);
  // Fills noise_sigma, rank_threshold, rank, effective_memory and channel_scale of a model whose basis,
  // singular values, spectra_seen and total_variance are set.
  void Finish(PcaModel& next) const;
  void Reorthonormalize(Eigen::MatrixXf& basis) const;
  void Publish(std::shared_ptr<const PcaModel> model);

  int channels_;
  SubspaceOptions options_;
  double effective_memory_;
  Eigen::VectorXf channel_scale_;

  // State. U, s and n live in the latest snapshot (current_), which the next update only reads; the mean is
  // kept in double here because n grows without bound when forgetting is 1.
  std::shared_ptr<const PcaModel> current_;
  Eigen::VectorXd mean_;
  uint64_t updates_since_qr_ = 0;
  uint64_t rejected_blocks_ = 0;
  uint64_t implicit_residual_updates_ = 0;

  Eigen::MatrixXf buffer_;  // D x block
  int buffered_ = 0;

  // Workspaces of the update, kept to avoid reallocating them every block.
  Eigen::VectorXd block_mean_;  // D
  Eigen::VectorXd block_centre_;  // D: m', subtracted from all but the last spectrum of the block
  Eigen::VectorXf centre_high_;   // D: m' rounded to float
  Eigen::VectorXf centre_low_;    // D: m' − centre_high_
  Eigen::MatrixXf centred_;     // D x (block + 1): centred block (b − 1 columns) plus mean-shift column, then R
  Eigen::MatrixXf projection_;  // k x (block + 1): P
  Eigen::MatrixXf correction_;  // k x (block + 1): second Gram–Schmidt pass
  Eigen::MatrixXf residual_gram_;  // (block + 1)²: RᵀR, lower triangle
  Eigen::MatrixXd residual_gram_double_;  // the same, both triangles
  Eigen::LLT<Eigen::MatrixXd> residual_llt_;
  Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> residual_eigen_;
  Eigen::MatrixXd residual_factor_;   // p x (block + 1): R_r, with R = Q_r R_r
  Eigen::MatrixXd residual_inverse_;  // (block + 1) x p: X with Q_r = R X
  Eigen::MatrixXd residual_rotation_;  // (block + 1) x k': X Ũ_bottom, R's share of the new basis
  Eigen::MatrixXf rotation_;           // the same in float
  Eigen::MatrixXd basis_rotation_;     // k x k': U's share (Ũ_top, less P X Ũ_bottom when R is implicit)
  Eigen::MatrixXd small_;       // (k + p) x (k + block + 1): M
  Eigen::MatrixXd gram_;        // (k + p) x (k + p): M Mᵀ
  Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> eigen_;

  // current_ as seen by other threads. A mutex rather than std::atomic<std::shared_ptr>: libstdc++ 12's
  // atomic load unlocks with relaxed order, which ThreadSanitizer (rightly, by the letter) reports as a race.
  mutable std::mutex published_mutex_;
  std::shared_ptr<const PcaModel> published_;
};

}  // namespace specwatch
