// Principal angles against bases built with known angles; the drift tracker's event logic.
#include "operators/monitor/subspace_drift.hpp"

#include "operators/core/config_error.hpp"
#include "tests/unit/operators/synthetic.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <vector>

namespace specwatch {
namespace {

constexpr double kRadPerDeg = M_PI / 180.0;

/// Two D x k orthonormal bases whose principal angles are exactly `angles_deg`: a = q_0..q_{k-1}, column i of b
/// = cos θ_i q_i + sin θ_i q_{k+i}, then b mixed by a random k x k rotation (the span, hence the angles, stays).
struct KnownAngles {
  KnownAngles(int d, const std::vector<double>& angles_deg, uint64_t seed) {
    std::mt19937_64 gen(seed);
    const int k = static_cast<int>(angles_deg.size());
    const Eigen::MatrixXd q = test::RandomOrthonormal(d, 2 * k, gen);
    a = q.leftCols(k);
    b.resize(d, k);
    for (int i = 0; i < k; ++i) {
      const double t = angles_deg[static_cast<size_t>(i)] * kRadPerDeg;
      b.col(i) = std::cos(t) * q.col(i) + std::sin(t) * q.col(k + i);
    }
    b = b * test::RandomOrthonormal(k, k, gen);
  }
  Eigen::MatrixXd a;
  Eigen::MatrixXd b;
};

/// The first column of `base` turned by `deg` towards `towards` (a unit vector orthogonal to base).
Eigen::MatrixXf Turned(const Eigen::MatrixXd& base, const Eigen::VectorXd& towards, double deg) {
  Eigen::MatrixXd m = base;
  m.col(0) = std::cos(deg * kRadPerDeg) * base.col(0) + std::sin(deg * kRadPerDeg) * towards;
  return m.cast<float>();
}

}  // namespace

TEST_CASE("PrincipalAnglesDeg: equal to the angles the bases were built with, small and large") {
  const std::vector<double> want = {1e-5, 0.01, 0.7, 10.0, 44.9, 45.1, 63.0, 89.99, 90.0};
  const KnownAngles s(300, want, 11);
  const Eigen::VectorXd got = PrincipalAnglesDeg(s.a, s.b);
  REQUIRE(got.size() == static_cast<Eigen::Index>(want.size()));
  for (size_t i = 0; i < want.size(); ++i) {
    INFO("angle ", want[i]);
    // Double rounding: ~1e-14 rad in the sine or cosine. arccos alone would give ~1e-6 deg for the smallest.
    CHECK(std::abs(got(static_cast<Eigen::Index>(i)) - want[i]) < 1e-9);
  }
  // Symmetric, and the same from a float basis to float accuracy.
  CHECK((PrincipalAnglesDeg(s.b, s.a) - got).cwiseAbs().maxCoeff() < 1e-9);
  const Eigen::MatrixXd af = s.a.cast<float>().cast<double>();
  const Eigen::MatrixXd bf = s.b.cast<float>().cast<double>();
  CHECK((PrincipalAnglesDeg(af, bf) - got).cwiseAbs().maxCoeff() < 1e-3);
  // The test helper (orthonormalises, then the largest angle) agrees.
  CHECK(test::LargestPrincipalAngleDeg(s.a * 3.0, s.b) == doctest::Approx(90.0).epsilon(1e-12));
}

TEST_CASE("PrincipalAnglesDeg: bases of different ranks give min(k_a, k_b) angles; a subspace inside has 0") {
  const KnownAngles s(50, {5.0, 20.0, 30.0}, 12);
  // A subspace inside another: all its angles are 0.
  std::mt19937_64 gen(13);
  const Eigen::MatrixXd inner = test::RandomOrthonormal(50, 4, gen);
  const Eigen::VectorXd big = PrincipalAnglesDeg(inner, inner.leftCols(2));
  REQUIRE(big.size() == 2);
  CHECK(big.cwiseAbs().maxCoeff() < 1e-6);
  const Eigen::VectorXd got = PrincipalAnglesDeg(s.a.leftCols(1), s.b);  // one angle: the smallest to span(b)
  REQUIRE(got.size() == 1);
  // span(b) = span{cos θ_i q_i + sin θ_i q_{3+i}}; q_0 is closest to its own rotated column: 5 degrees.
  CHECK(got(0) == doctest::Approx(5.0).epsilon(1e-9));
  CHECK_THROWS_AS(PrincipalAnglesDeg(s.a, s.a.topRows(10)), std::invalid_argument);
}

TEST_CASE("SubspaceDriftOptions: Validate names the field") {
  CHECK_NOTHROW(SubspaceDriftOptions{}.Validate());
  SubspaceDriftOptions o;
  o.threshold_deg = 90;
  CHECK_THROWS_WITH_AS(o.Validate(), doctest::Contains("threshold_deg must be in (0, 90)"), ConfigError);
  o = {};
  o.confirm_checks = 0;
  CHECK_THROWS_WITH_AS(SubspaceDriftTracker{o}, doctest::Contains("confirm_checks must be >= 1"), ConfigError);
}

TEST_CASE("SubspaceDriftTracker: one event per change after confirm_checks checks; the reference then moves") {
  std::mt19937_64 gen(21);
  const Eigen::MatrixXd q = test::RandomOrthonormal(200, 6, gen);
  const Eigen::MatrixXd base = q.leftCols(3);
  const Eigen::VectorXd towards = q.col(5);
  // The model keeps k_max = 5 columns; the reference rank is 3, so the tail columns must not count.
  auto model = [&](double deg) {
    Eigen::MatrixXf m(200, 5);
    m.leftCols(3) = Turned(base, towards, deg);
    m.col(3) = q.col(3).cast<float>();
    m.col(4) = q.col(4).cast<float>();
    return m;
  };
  SubspaceDriftTracker tracker;  // 10 degrees, 2 checks
  CHECK_FALSE(tracker.Check(model(50), 0).has_value());  // no reference yet
  tracker.SetReference(model(0), 3);
  CHECK(tracker.reference_rank() == 3);

  CHECK_FALSE(tracker.Check(model(2), 1000).has_value());
  CHECK(tracker.last_max_angle_deg() == doctest::Approx(2.0).epsilon(1e-4));
  CHECK_FALSE(tracker.Check(model(12), 2000).has_value());  // one check above: pending
  CHECK(tracker.pending_checks() == 1);
  CHECK_FALSE(tracker.Check(model(3), 3000).has_value());   // back below: the run is broken
  CHECK(tracker.pending_checks() == 0);
  CHECK_FALSE(tracker.Check(model(12), 4000).has_value());
  const auto event = tracker.Check(model(12.5), 5000);
  REQUIRE(event.has_value());
  CHECK(event->max_angle_deg == doctest::Approx(12.5).epsilon(1e-4));
  REQUIRE(event->angles_deg.size() == 3);
  CHECK(event->angles_deg[0] < 1e-3);  // the other two reference directions did not move
  CHECK(event->angles_deg[1] < 1e-3);
  CHECK(event->onset_spectra == 4000);
  CHECK(event->detected_spectra == 5000);
  CHECK(event->reference_rank == 3);

  // The reference is now the 12.5 degree basis: staying there is no news, however long.
  for (int i = 0; i < 5; ++i) CHECK_FALSE(tracker.Check(model(12.5), 6000 + 1000 * i).has_value());
  CHECK(tracker.last_max_angle_deg() < 1e-3);
  // A further turn of 20 degrees in the same plane is 20 degrees from the new reference: a second event.
  CHECK_FALSE(tracker.Check(model(32.5), 11000).has_value());
  const auto second = tracker.Check(model(32.5), 12000);
  REQUIRE(second.has_value());
  CHECK(second->max_angle_deg == doctest::Approx(20.0).epsilon(1e-4));
  CHECK(second->onset_spectra == 11000);

  // A basis with fewer columns than the reference rank: the missing direction counts as 90 degrees.
  tracker.SetReference(model(0), 3);
  CHECK_FALSE(tracker.Check(model(0).leftCols(2), 13000).has_value());
  CHECK(tracker.last_max_angle_deg() == 90.0);

  tracker.Reset();
  CHECK_FALSE(tracker.has_reference());
  CHECK_FALSE(tracker.Check(model(60), 14000).has_value());
  CHECK_FALSE(tracker.Check(model(60), 15000).has_value());
  CHECK_THROWS_AS(tracker.SetReference(model(0), 6), std::invalid_argument);
  tracker.SetReference(model(0), 3);
  CHECK_THROWS_AS(tracker.Check(model(0).topRows(100), 0), std::invalid_argument);
}

TEST_CASE("SubspaceDriftTracker: confirm_checks = 1 fires on the first check above the threshold") {
  std::mt19937_64 gen(22);
  const Eigen::MatrixXd q = test::RandomOrthonormal(64, 3, gen);
  SubspaceDriftOptions o;
  o.confirm_checks = 1;
  o.threshold_deg = 5;
  SubspaceDriftTracker tracker(o);
  tracker.SetReference(q.leftCols(2).cast<float>(), 2);
  CHECK_FALSE(tracker.Check(Turned(q.leftCols(2), q.col(2), 4.9), 10).has_value());
  const auto event = tracker.Check(Turned(q.leftCols(2), q.col(2), 5.1), 20);
  REQUIRE(event.has_value());
  CHECK(event->onset_spectra == 20);
}

}  // namespace specwatch

namespace specwatch {

TEST_CASE("ReferenceRank: components at least min_signal_ratio x the rank threshold; all of them without one") {
  PcaModel m;
  m.singular_values = Eigen::VectorXd(6);
  m.singular_values << 900, 300, 201, 199, 120, 100;
  m.rank = 5;
  m.rank_threshold = 100;
  SubspaceDriftOptions o;  // min_signal_ratio 2
  CHECK(ReferenceRank(m, o) == 3);
  o.min_signal_ratio = 1.0;
  CHECK(ReferenceRank(m, o) == 5);  // capped by rank
  o.min_signal_ratio = 10.0;
  CHECK(ReferenceRank(m, o) == 0);
  m.rank_threshold = 0;  // unknown: the model's rank
  CHECK(ReferenceRank(m, o) == 5);
}

}  // namespace specwatch
