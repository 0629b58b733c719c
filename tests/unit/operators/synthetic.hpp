#pragma once
/// Test-only ground truth for the operator tests: low-rank spectra plus Gaussian noise, drawn from a seeded
/// generator, and the reference computations (in double) the streaming results are compared with.

#include "operators/model/incremental_svd.hpp"
#include "operators/model/principal_angles.hpp"

#include <Eigen/Dense>

#include <cmath>
#include <random>

namespace specwatch::test {

/// D x k matrix with orthonormal columns, uniformly random (QR of a Gaussian matrix).
inline Eigen::MatrixXd RandomOrthonormal(int d, int k, std::mt19937_64& gen) {
  std::normal_distribution<double> normal;
  const Eigen::MatrixXd g = Eigen::MatrixXd::NullaryExpr(d, k, [&] { return normal(gen); });
  return Eigen::HouseholderQR<Eigen::MatrixXd>(g).householderQ() * Eigen::MatrixXd::Identity(d, k);
}

/// Largest principal angle between span(a) and span(b), degrees; a and b have the same number of columns and need
/// not be orthonormal (they are orthonormalised first). PrincipalAnglesDeg takes small angles from their sines.
inline double LargestPrincipalAngleDeg(const Eigen::MatrixXd& a, const Eigen::MatrixXd& b) {
  const Eigen::MatrixXd qa = Eigen::HouseholderQR<Eigen::MatrixXd>(a).householderQ() *
                             Eigen::MatrixXd::Identity(a.rows(), a.cols());
  const Eigen::MatrixXd qb = Eigen::HouseholderQR<Eigen::MatrixXd>(b).householderQ() *
                             Eigen::MatrixXd::Identity(b.rows(), b.cols());
  return PrincipalAnglesDeg(qa, qb).maxCoeff();
}

/// x = mean + basis · diag(stddev) · z + noise · e, z and e standard normal.
struct LowRankSource {
  LowRankSource(int d, const Eigen::VectorXd& stddev, double noise, uint64_t seed)
      : gen(seed), stddev(stddev), noise(noise) {
    basis = RandomOrthonormal(d, static_cast<int>(stddev.size()), gen);
    // A smooth positive "spectrum" as the mean, so centring matters.
    mean = Eigen::VectorXd::LinSpaced(d, 0.0, 6.0).array().sin().abs() * 50.0 + 100.0;
  }

  /// m spectra; `truth` (optional) receives them without noise.
  Eigen::MatrixXf Draw(int m, Eigen::MatrixXf* truth = nullptr) {
    const Eigen::MatrixXd z = Eigen::MatrixXd::NullaryExpr(stddev.size(), m, [&] { return normal(gen); });
    const Eigen::MatrixXd clean = (basis * stddev.asDiagonal() * z).colwise() + mean;
    if (truth != nullptr) *truth = clean.cast<float>();
    const Eigen::MatrixXd e = Eigen::MatrixXd::NullaryExpr(mean.size(), m, [&] { return normal(gen); });
    return (clean + noise * e).cast<float>();
  }

  std::mt19937_64 gen;
  std::normal_distribution<double> normal;
  Eigen::VectorXd stddev;
  double noise;
  Eigen::MatrixXd basis;  // D x K, orthonormal
  Eigen::VectorXd mean;   // D
};

/// Reference PCA of weighted spectra in double: weighted mean, centred scatter trace, and the SVD (BDCSVD) of
/// the weighted centred matrix [sqrt(w_i)(x_i − mean)].
struct BatchPca {
  BatchPca(const Eigen::MatrixXf& spectra, const Eigen::VectorXd& weights) {
    const Eigen::MatrixXd x = spectra.cast<double>();
    mean = x * weights / weights.sum();
    const Eigen::MatrixXd centred = (x.colwise() - mean) * weights.cwiseSqrt().asDiagonal();
    total_variance = centred.squaredNorm();
    Eigen::BDCSVD<Eigen::MatrixXd> svd(centred, Eigen::ComputeThinU);
    basis = svd.matrixU();
    singular_values = svd.singularValues();
  }
  explicit BatchPca(const Eigen::MatrixXf& spectra) : BatchPca(spectra, Eigen::VectorXd::Ones(spectra.cols())) {}

  Eigen::VectorXd mean;
  Eigen::MatrixXd basis;
  Eigen::VectorXd singular_values;
  double total_variance = 0;
};

/// The model's first k eigenspectra, in double.
inline Eigen::MatrixXd Leading(const PcaModel& model, int k) { return model.basis.leftCols(k).cast<double>(); }

inline double RelativeError(const Eigen::VectorXd& got, const Eigen::VectorXd& want) {
  return (got - want).norm() / want.norm();
}

/// max |UᵀU − I| of the model's basis.
inline double OrthonormalityError(const PcaModel& model) {
  const Eigen::MatrixXd u = model.basis.cast<double>();
  return (u.transpose() * u - Eigen::MatrixXd::Identity(u.cols(), u.cols())).cwiseAbs().maxCoeff();
}

}  // namespace specwatch::test
