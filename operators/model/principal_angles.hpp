#pragma once
/// Principal angles between two subspaces (docs/science.md §7.2): how far a model's basis turned, against a
/// reference or against a batch SVD. A pure function; any thread.

#include <Eigen/Core>

namespace specwatch {

/// Principal angles between span(a) and span(b), in degrees, ascending; min(a.cols(), b.cols()) of them.
/// Requires orthonormal columns (to rounding: a float basis is fine) and a.rows() == b.rows()
/// (std::invalid_argument otherwise). Cosines are the singular values of aᵀb, clamped to [0, 1]; below 45° the
/// angle is taken from the sines instead, the singular values of (I − a aᵀ) b (for a.cols() >= b.cols(); the
/// roles swap otherwise), because arccos of a cosine near 1 loses half the digits (Björck & Golub 1973).
/// Cost O(D·k_a·k_b + D·k²).
Eigen::VectorXd PrincipalAnglesDeg(const Eigen::Ref<const Eigen::MatrixXd>& a,
                                   const Eigen::Ref<const Eigen::MatrixXd>& b);

}  // namespace specwatch
