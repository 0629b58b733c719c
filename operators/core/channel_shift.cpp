#include "operators/core/channel_shift.hpp"

#include <cmath>

namespace specwatch {
namespace {

constexpr double kKeysA = -0.5;

}  // namespace

double KeysCubic(double x) {
  x = std::fabs(x);
  if (x <= 1.0) return ((kKeysA + 2.0) * x - (kKeysA + 3.0)) * x * x + 1.0;
  if (x < 2.0) return ((kKeysA * x - 5.0 * kKeysA) * x + 8.0 * kKeysA) * x - 4.0 * kKeysA;
  return 0.0;
}

double KeysCubicDerivative(double x) {
  const double sign = x < 0.0 ? -1.0 : 1.0;
  x = std::fabs(x);
  if (x <= 1.0) return sign * (3.0 * (kKeysA + 2.0) * x - 2.0 * (kKeysA + 3.0)) * x;
  if (x < 2.0) return sign * ((3.0 * kKeysA * x - 10.0 * kKeysA) * x + 8.0 * kKeysA);
  return 0.0;
}

Eigen::VectorXd ShiftByCubic(const Eigen::Ref<const Eigen::VectorXd>& v, double delta, ShiftEdge edge) {
  const Eigen::Index d = v.size();
  Eigen::VectorXd out(d);
  if (d == 0) return out;
  const double base = std::floor(-delta);
  const double f = -delta - base;  // v'(j) = v(j + base + f): the same fraction for every channel
  double weight[4];
  for (int k = 0; k < 4; ++k) weight[k] = KeysCubic(f - (k - 1));
  const auto at = [&](Eigen::Index i) {
    if (i < 0) return edge == ShiftEdge::kHold ? v(0) : 0.0;
    if (i >= d) return edge == ShiftEdge::kHold ? v(d - 1) : 0.0;
    return v(i);
  };
  const auto offset = static_cast<Eigen::Index>(base);
  for (Eigen::Index j = 0; j < d; ++j) {
    double sum = 0.0;
    for (int k = 0; k < 4; ++k) sum += weight[k] * at(j + offset + (k - 1));
    out(j) = sum;
  }
  return out;
}

}  // namespace specwatch
