#include "operators/model/principal_angles.hpp"

#include <Eigen/SVD>

#include <algorithm>
#include <cmath>
#include <numbers>
#include <stdexcept>
#include <string>

namespace specwatch {
namespace {

constexpr double kDegPerRad = 180.0 / std::numbers::pi;

}  // namespace

Eigen::VectorXd PrincipalAnglesDeg(const Eigen::Ref<const Eigen::MatrixXd>& a,
                                   const Eigen::Ref<const Eigen::MatrixXd>& b) {
  if (a.rows() != b.rows()) {
    throw std::invalid_argument("PrincipalAnglesDeg: bases of " + std::to_string(a.rows()) + " and " +
                                std::to_string(b.rows()) + " rows");
  }
  // The sines need the projection of the smaller basis off the larger one; the angles are symmetric.
  const bool swap = a.cols() < b.cols();
  const Eigen::Ref<const Eigen::MatrixXd>& big = swap ? b : a;
  const Eigen::Ref<const Eigen::MatrixXd>& small = swap ? a : b;
  const Eigen::Index q = small.cols();
  Eigen::VectorXd angles(q);
  if (q == 0) return angles;

  const Eigen::MatrixXd cross = big.transpose() * small;  // k_big x q
  const Eigen::VectorXd cosines = Eigen::JacobiSVD<Eigen::MatrixXd>(cross).singularValues();  // descending
  const Eigen::MatrixXd outside = small - big * cross;
  const Eigen::VectorXd sines = Eigen::JacobiSVD<Eigen::MatrixXd>(outside).singularValues();  // descending
  for (Eigen::Index i = 0; i < q; ++i) {
    const double c = std::clamp(cosines(i), 0.0, 1.0);
    // sines(q-1-i) belongs to the i-th smallest angle. A tall `outside` of D < q rows (only when q > D, i.e. not
    // a basis) has fewer singular values: fall back on the cosine.
    const Eigen::Index j = q - 1 - i;
    if (c * c >= 0.5 && j < sines.size()) {
      angles(i) = std::asin(std::clamp(sines(j), 0.0, 1.0)) * kDegPerRad;
    } else {
      angles(i) = std::acos(c) * kDegPerRad;
    }
  }
  return angles;
}

}  // namespace specwatch
