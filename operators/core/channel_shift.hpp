#pragma once
/// Moving a vector along the channel axis by a fraction of a channel (docs/science.md §7.1): what "shift the model,
/// not the counts" needs, for the mean, the channel scale and the basis of a model, and for the weighting's sums.
///
/// Pure functions; any thread.

#include <Eigen/Core>

namespace specwatch {

/// Keys' cubic convolution kernel (a = −1/2) and its derivative.
double KeysCubic(double x);
double KeysCubicDerivative(double x);

/// How ShiftByCubic continues a vector beyond its ends.
enum class ShiftEdge { kHold, kZero };

/// v'(j) = v(j − delta), delta in channels, by cubic convolution (Keys, a = −1/2: C¹, exact for quadratics,
/// interpolating at whole channels, so an integer delta moves v exactly). Beyond the ends v continues with its
/// edge value (kHold: a mean or a scale) or with zeros (kZero: a basis vector).
Eigen::VectorXd ShiftByCubic(const Eigen::Ref<const Eigen::VectorXd>& v, double delta, ShiftEdge edge);

}  // namespace specwatch
