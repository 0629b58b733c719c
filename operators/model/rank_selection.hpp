#pragma once
/// Choosing how many components are signal (docs/science.md §4): the Gavish–Donoho optimal hard threshold.
///
/// For an m x n matrix X = signal + noise of i.i.d. entries with standard deviation σ, singular values above
///   τ = λ*(β) · sqrt(max(m, n)) · σ,   β = min(m, n) / max(m, n),
///   λ*(β) = sqrt(2(β + 1) + 8β / ((β + 1) + sqrt(β² + 14β + 1)))
/// are kept (Gavish & Donoho 2014, "The optimal hard threshold for singular values is 4/√3"). For a stream,
/// n is the effective number of spectra (N_eff with forgetting) and σ is estimated from the energy outside the
/// tracked components: σ² = residual energy / ((min(D, n) − k) · max(D, n)).
///
/// Pure functions; any thread.

#include <Eigen/Core>

namespace specwatch {

/// λ*(β) for β in (0, 1]; 4/√3 at β = 1.
double GavishDonohoLambda(double beta);

/// τ for an m x n matrix with noise σ.
double GavishDonohoThreshold(double rows, double cols, double sigma);

/// Noise σ per matrix entry from the energy not captured by `captured` components of a rows x cols matrix.
/// 0 when nothing can be estimated (no spectra, or every dimension captured).
double NoiseSigmaFromResidual(double residual_energy, double rows, double cols, double captured);

/// Number of singular values (sorted, decreasing) strictly above `threshold`.
int CountAbove(const Eigen::VectorXd& singular_values, double threshold);

}  // namespace specwatch
