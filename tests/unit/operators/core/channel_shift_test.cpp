// ShiftByCubic against closed forms.
#include "operators/core/channel_shift.hpp"

#include <doctest/doctest.h>

namespace specwatch {

TEST_CASE("ShiftByCubic: whole channels move exactly, a quadratic is reproduced, the edges hold or vanish") {
  Eigen::VectorXd v = Eigen::VectorXd::LinSpaced(40, 0.0, 39.0);
  v = v.array().square() * 0.3 - v.array() * 2.0 + 5.0;  // q(j) = 0.3 j² − 2 j + 5
  const Eigen::VectorXd moved = ShiftByCubic(v, 3.0, ShiftEdge::kZero);
  for (int j = 3; j < 40; ++j) CHECK(moved(j) == doctest::Approx(v(j - 3)).epsilon(1e-14));
  for (int j = 0; j < 3; ++j) CHECK(moved(j) == 0.0);
  const Eigen::VectorXd held = ShiftByCubic(v, -2.0, ShiftEdge::kHold);
  CHECK(held(39) == v(39));
  CHECK(held(38) == v(39));
  CHECK(held(37) == doctest::Approx(v(39)));
  // Keys' kernel (a = −1/2) is exact for quadratics: v(j − δ) = q(j − δ) wherever the 4 taps are inside.
  for (double delta : {0.25, 0.5, -1.7, 2.3}) {
    CAPTURE(delta);
    const Eigen::VectorXd s = ShiftByCubic(v, delta, ShiftEdge::kHold);
    for (int j = 5; j < 35; ++j) {
      const double x = j - delta;
      CHECK(s(j) == doctest::Approx(0.3 * x * x - 2.0 * x + 5.0).epsilon(1e-12));
    }
  }
}

}  // namespace specwatch
