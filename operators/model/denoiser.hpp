#pragma once
/// Projection denoising with a PcaModel snapshot (docs/science.md §5).
///
/// Stateless: Denoise reads an immutable model and may run on any number of threads at once.
/// It always returns the residual norm alongside the reconstruction: a spectrum unlike the ones the model has
/// learnt is projected away by denoising, and the residual is the only trace of it.

#include "operators/model/incremental_svd.hpp"
#include "operators/core/spectrum_batch.hpp"

#include <Eigen/Core>

namespace specwatch {

/// The deviance of a weighted model's reconstruction is scored against μ_j = max(x̂_j, kDevianceFloor,
/// kReconstructionFloorFraction · m_j), m_j = max(mean_j, 0) · sqrt(b_j a) the model's mean spectrum at the
/// spectrum's total a. A reconstruction far below the mean spectrum in a channel is the projection's noise, not
/// knowledge (a young model's basis pushes quiet channels to or below zero): scored against ~0 there, one stray
/// count adds ~20 to the deviance, and the scores' tail grew until a 0.2 % inclusion at 1,000 counts went 87 %
/// unflagged (tests/acceptance/test_operando.cpp). 3 % of the mean keeps that tail as it was while it stays below
/// the counts of any channel a phase really has (test_low_counts.cpp: clean medians 0.16–0.72 from 1 to 10^5
/// counts; 0.1 moved the median at 10^5 counts to 15, 0.01 the median at 100 counts to 0.6).
inline constexpr float kReconstructionFloorFraction = 0.03f;

/// That floor per channel, in counts, for a spectrum of `total` counts (a_i, floored at 1) under a weighted model;
/// empty for an unweighted one.
Eigen::ArrayXf ReconstructionFloor(const PcaModel& model, float total);

struct DenoiseResult {
  CountsMatrix denoised;          ///< D x m
  Eigen::VectorXf residual_norm;  ///< m: ||x − x̂||₂ per spectrum, in counts
  /// m: ||x̃ − x̂̃||² in the space the model was learnt in: with Poisson weighting x̃ = x / sqrt(a b), so this is
  /// the Pearson χ² of the spectrum against its reconstruction (≈ D − rank for a well-explained spectrum);
  /// unweighted it is residual_norm².
  Eigen::VectorXf residual_chi2;
  /// m: the standardised Poisson deviance z = (Dev − Σ f(μ_j)) / sqrt(Σ g(μ_j)) of the counts against
  /// μ = max(x̂, kDevianceFloor, the reconstruction floor above), f and g the exact mean and variance of the
  /// Poisson unit deviance
  /// (poisson_deviance.hpp; weighted models, i.e. count data, only; 0 otherwise). Mean 0 and sd 1 at any dose
  /// when x̂ is the true mean; the fitted x̂ and a heavy tail move that a little (docs/science.md §6), so
  /// thresholds come from a tail fit on nominal data (novelty_detector.hpp), not from a Gaussian.
  Eigen::VectorXf deviance_z;
  /// m: Hotelling T² of the scores, Σ_{i<rank} score_i² / (s_i² / n), s the model's singular values and
  /// n = spectra_seen: how unusual the spectrum's mixture is inside the subspace, which the residual cannot see.
  /// 0 when the model has no rank (or has seen nothing).
  Eigen::VectorXf hotelling_t2;
  /// m: each spectrum's total counts a_i (floored at 1) for weighted models; empty otherwise.
  Eigen::VectorXf totals;
  /// rank x m: column i holds spectrum i's scores U_rᵀ(xᵢ − mean), so x̂ᵢ = mean + U_r · scores.col(i).
  /// 0 x m when nothing was learnt (pass-through).
  Eigen::MatrixXf scores;
};

/// x̂ = mean + U_r U_rᵀ (x − mean), U_r the first model.rank columns of model.basis. A weighted model
/// (model.channel_scale set) works on x̃ = x / sqrt(a_i b_j) and returns x̂ = sqrt(a_i b_j) · x̂̃, in counts.
/// - model.rank == 0 (or empty basis) but spectra_seen > 0: x̂ = mean.
/// - spectra_seen == 0 (nothing learnt yet): x̂ = x, residual 0 (the data pass through unchanged).
/// Requires spectra.rows() == model.mean.size() once the model has seen data (std::invalid_argument otherwise).
/// `out` is resized (its storage reused when the size is unchanged) and must not alias `spectra`.
/// Cost: two float GEMMs of 2·D·rank flops per spectrum, done on column chunks that stay in cache.
void Denoise(const PcaModel& model, const Eigen::Ref<const CountsMatrix>& spectra, DenoiseResult* out);

}  // namespace specwatch
