// RetrospectiveBuffer: candidates kept per pass up to a bound, the lowest-priority ones dropped for room.
#include "operators/monitor/retrospective_buffer.hpp"

#include "operators/core/config_error.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <vector>

namespace specwatch {
namespace {

RetrospectiveCandidate Candidate(uint32_t x, uint32_t pass, double priority) {
  RetrospectiveCandidate c;
  c.position = ScanPosition{x, 0, pass};
  c.priority = priority;
  c.counts = Eigen::VectorXf::Constant(4, static_cast<float>(x));
  return c;
}

}  // namespace

TEST_CASE("retrospective buffer: keeps up to max_spectra, evicts the lowest priority, hands out one pass") {
  RetrospectiveOptions o;
  o.max_spectra = 3;
  RetrospectiveBuffer b(o);
  b.Offer(Candidate(1, 0, 5.0));
  b.Offer(Candidate(2, 0, std::numeric_limits<double>::infinity()));  // unscored: ranks highest
  b.Offer(Candidate(3, 1, 4.0));
  CHECK(b.size() == 3);
  b.Offer(Candidate(4, 0, 3.5));  // below every kept one: dropped
  CHECK(b.size() == 3);
  CHECK(b.evicted() == 1);
  b.Offer(Candidate(5, 0, 9.0));  // evicts x = 3 (priority 4)
  CHECK(b.evicted() == 2);
  const std::vector<RetrospectiveCandidate> pass0 = b.Take(0);
  REQUIRE(pass0.size() == 3);
  CHECK(pass0[0].position.x == 1);  // arrival order
  CHECK(pass0[1].position.x == 2);
  CHECK(pass0[2].position.x == 5);
  CHECK(pass0[2].counts(0) == 5.0f);
  CHECK(b.size() == 0);
  CHECK(b.Take(1).empty());  // evicted
}

TEST_CASE("retrospective buffer: disabled keeps nothing; options validated") {
  RetrospectiveOptions off;
  off.enabled = false;
  RetrospectiveBuffer b(off);
  b.Offer(Candidate(1, 0, 1.0));
  CHECK(b.size() == 0);
  RetrospectiveOptions bad;
  bad.max_spectra = 0;
  CHECK_THROWS_AS(RetrospectiveBuffer{bad}, ConfigError);
  bad = RetrospectiveOptions{};
  bad.candidate_sigma = -1.0;
  CHECK_THROWS_AS(RetrospectiveBuffer{bad}, ConfigError);
}

TEST_CASE("retrospective buffer: candidates scored before any standardisation are ranked by it once it exists") {
  RetrospectiveBuffer b{RetrospectiveOptions{}};
  const double inf = std::numeric_limits<double>::infinity();
  RetrospectiveCandidate unscored = Candidate(1, 0, inf);  // seen before any model: live_z NaN
  RetrospectiveCandidate high = Candidate(2, 0, inf);
  high.live_z = 9.0f;
  RetrospectiveCandidate low = Candidate(3, 0, inf);
  low.live_z = 2.0f;
  b.Offer(unscored);
  b.Offer(high);
  b.Offer(low);
  b.Offer(Candidate(4, 0, 3.5));  // ranked live already
  b.RankScored(/*location=*/1.0, /*scale=*/2.0, /*min_priority=*/3.0);
  const std::vector<RetrospectiveCandidate> kept = b.Take(0);
  REQUIRE(kept.size() == 3);  // low: (2 - 1) / 2 = 0.5 <= 3, forgotten
  CHECK(kept[0].position.x == 1);
  CHECK(std::isinf(kept[0].priority));  // unscored: stays for the pass-end model
  CHECK(kept[1].position.x == 2);
  CHECK(kept[1].priority == doctest::Approx(4.0));
  CHECK(kept[2].position.x == 4);
  CHECK(kept[2].priority == doctest::Approx(3.5));
}

}  // namespace specwatch
