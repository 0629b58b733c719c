#pragma once
/// The Poisson unit deviance and its exact moments (docs/science.md §5).
///
///   d(x; μ) = 2 [x ln(x/μ) − (x − μ)],   d(0; μ) = 2μ
///
/// For X ~ Poisson(μ), f(μ) = E d(X; μ) and g(μ) = Var d(X; μ) are what the nominal χ²(1) per channel (f = 1,
/// g = 2) becomes at low counts: f → 0 as μ → 0 (f(0.05) ≈ 0.35), f ≈ 1 + 1/(6μ) above a few counts. The
/// standardised deviance of a spectrum, z = (Σ d − Σ f) / sqrt(Σ g), then has mean 0 and variance 1 at any dose
/// when μ is the true mean, instead of drifting with the counts as (Dev − ν)/sqrt(2ν) does.
///
/// f and g come from one process-wide immutable table, built on first use (a function-local static, so
/// thread-safe): per octave of μ over [2^-16, 2^16) ≈ [1.5e-5, 6.6e4], a degree-6 polynomial in the float's mantissa,
/// fitted to direct summation of the Poisson pmf (asymptotic series above 2^13); relative error < 2e-5. Above the
/// grid the asymptotic series 1 + a₁/μ + a₂/μ² (and 2 + b₁/μ + b₂/μ²) takes over; below it the pmf is summed
/// directly (a handful of terms). The hot path (SumPoissonDevianceMoments) reads the 32 octaves' coefficients
/// from registers, with no memory gather.
///
/// Concurrency: every function here is stateless (after the table is built) and may run on any number of threads.

#include <Eigen/Core>

#include <cstdint>
#include <span>
#include <vector>

namespace specwatch {

/// The smallest expected count a reconstructed channel is scored with [counts]: a reconstruction at or below
/// zero where counts were seen is a misfit, and scores as a large deviance (≈ 20 per count) rather than an
/// infinity. Far below the channels of a sparse spectrum (a few counts over 2,048 channels is ~1e-3 per channel):
/// a floor near them (it was 1e-2) scores every quiet channel against more counts than it expects, and clean
/// spectra at 1–30 counts came out at z ≈ −4 … −2.4 against the simulator's truth (tests/acceptance/
/// test_low_counts.cpp). 2^-16, the table's lowest octave.
inline constexpr float kDevianceFloor = 0x1p-16f;

/// E d(X; μ) for X ~ Poisson(μ), μ > 0 (0 for μ <= 0).
double PoissonDevianceMean(double mu);
/// Var d(X; μ) for X ~ Poisson(μ), μ > 0 (0 for μ <= 0).
double PoissonDevianceVariance(double mu);

/// f(μ) and g(μ) by direct summation of the pmf (slow: O(sqrt(μ)) terms): the reference the table is built from.
void PoissonDevianceMomentsExact(double mu, double* mean, double* variance);

/// Σ_j f(μ_j) and Σ_j g(μ_j) over expected counts already floored at kDevianceFloor: the hot-path form
/// (one table read per channel, no logarithm).
void SumPoissonDevianceMoments(std::span<const float> mu, double* sum_mean, double* sum_variance);

/// One spectrum's deviance against expected counts, and its standardisation.
struct DevianceScore {
  double deviance = 0;  ///< 2 Σ_j [x_j ln(x_j/μ_j) − (x_j − μ_j)]
  double expected = 0;  ///< Σ_j f(μ_j)
  double variance = 0;  ///< Σ_j g(μ_j)
  double z = 0;         ///< (deviance − expected) / sqrt(variance); 0 when variance is 0
};

/// Reusable buffers of ScorePoissonDeviance, so a caller scoring many spectra does not allocate per spectrum.
struct DevianceWorkspace {
  Eigen::ArrayXf mu;
  Eigen::ArrayXf log_ratio;
};

/// Scores counts x against a reconstruction x̂ (same length, in counts): μ = max(x̂, kDevianceFloor), and
/// μ_j >= lower_j when `lower` is given (same length; a caller's own floor per channel, in counts).
/// Denoise computes DenoiseResult::deviance_z exactly this way (denoiser.hpp: its floor).
DevianceScore ScorePoissonDeviance(const Eigen::Ref<const Eigen::VectorXf>& counts,
                                   const Eigen::Ref<const Eigen::VectorXf>& reconstruction,
                                   DevianceWorkspace* workspace = nullptr, const Eigen::ArrayXf* lower = nullptr);

/// One channel's share of a spectrum's excess deviance.
struct DevianceContribution {
  int channel = 0;
  float counts = 0;    ///< x_j
  float expected = 0;  ///< μ_j (floored)
  float excess = 0;    ///< d(x_j; μ_j) − f(μ_j): what the channel adds to deviance − expected
  int sign = 0;        ///< sign of x_j − μ_j: +1 counts above the reconstruction (a line the model lacks), −1 below
};

/// The `n` channels with the largest excess deviance, largest first (fewer if the spectrum is shorter): the
/// energies that make a novel spectrum novel. Cost O(D log n).
/// `lower`, when given, floors μ per channel as in ScorePoissonDeviance (so the excess is the score's own).
std::vector<DevianceContribution> TopDevianceChannels(const Eigen::Ref<const Eigen::VectorXf>& counts,
                                                      const Eigen::Ref<const Eigen::VectorXf>& reconstruction,
                                                      int n, const Eigen::ArrayXf* lower = nullptr);

}  // namespace specwatch
