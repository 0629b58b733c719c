// Issue 15 §1: the deviance score's null holds at any count level, down to sparse spectra (under 1 count per 100
// channels). Clean EDS spectra (3 phases, 2,048 channels, no inclusion) from 1 to 10^5 counts per spectrum:
//   - against the simulator's truth (ScorePoissonDeviance with the expected counts as reconstruction): what the
//     exact Poisson moments of the deviance alone give;
//   - through the service's Session in one pass (Score before Learn, as the flow graph runs it): what the live
//     scores are once the model exists, on the second half of the pass.
// Mean and sd of z are checked against 0 and 1 at stated tolerances.
#include "operators/core/poisson_deviance.hpp"
#include "tests/acceptance/session_driver.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <vector>

namespace specwatch {
namespace {

using acceptance::FrameRun;
using acceptance::Options;
using acceptance::SessionConfig;
using acceptance::SessionDriver;

struct Moments {
  double n = 0, sum = 0, squares = 0;
  std::vector<double> values;
  void Add(double z) {
    n += 1;
    sum += z;
    squares += z * z;
    values.push_back(z);
  }
  double Median() const { return acceptance::Median(values); }
  double RobustSd() const { return acceptance::RobustSigma(values); }
  double Mean() const { return sum / n; }
  double Sd() const { return std::sqrt(std::max(0.0, squares / n - Mean() * Mean())); }
};

struct Sweep {
  Moments truth, live;
  double counts_per_channel = 0;
  int rank = 0;
};

// One pass of a 64 x 64 map at `counts` per pure-phase spectrum.
Sweep Run(double counts) {
  sim::SimOptions o = Options(Modality::kEds, 2048, 3, counts, 64, 1);
  o.payload = sim::PayloadKind::kUint32;
  SessionConfig config;
  SessionDriver driver(o, config);
  Sweep s;
  double total = 0, spectra = 0;
  const uint64_t frames = driver.frames().FrameCount();
  for (uint64_t k = 0; k < frames; ++k) {
    const FrameRun r = driver.Step(k);
    const Eigen::MatrixXd truth = driver.frames().Truth(k);
    const Eigen::MatrixXf& x = r.batch->counts;
    const bool second_half = 2 * k >= frames;
    for (Eigen::Index i = 0; i < x.cols(); ++i) {
      total += x.col(i).sum();
      spectra += 1;
      s.truth.Add(ScorePoissonDeviance(x.col(i), truth.col(i).cast<float>()).z);
      if (second_half && r.scores->weighted && r.scores->result.deviance_z.size() == x.cols()) {
        s.live.Add(r.scores->result.deviance_z(i));
      }
    }
  }
  s.counts_per_channel = total / spectra / o.channels;
  s.rank = driver.session().Model()->rank;
  return s;
}

}  // namespace

TEST_CASE("low counts: clean spectra score mean 0, sd 1 from 1 to 10^5 counts per spectrum against the truth; "
          "through the Session the median stays within 1 of 0") {
  for (const double counts : {1.0, 3.0, 10.0, 30.0, 100.0, 1e3, 1e4, 1e5}) {
    const Sweep s = Run(counts);
    MESSAGE(counts, " counts/spectrum (", s.counts_per_channel, " per channel): truth z mean ", s.truth.Mean(),
            " sd ", s.truth.Sd(), "; live z mean ", s.live.Mean(), " sd ", s.live.Sd(), " median ", s.live.Median(),
            " robust sd ", s.live.RobustSd(), " (", s.live.n, " spectra), rank ", s.rank);
    CAPTURE(counts);
    // 4,096 spectra: standard errors 0.016 on the mean, 0.011 on the sd. Measured |mean| <= 0.025, sd 0.98-1.01;
    // with the old floor of 1e-2 counts the mean was -4.3 at 1 count and -0.26 at 1,000.
    CHECK(std::abs(s.truth.Mean()) < 0.08);
    CHECK(s.truth.Sd() == doctest::Approx(1.0).epsilon(0.06));
    // The live scores carry the first-pass model's own misfit too (measured median 0.17-0.87, robust sd
    // 0.78-1.6; the mean and sd have a heavy tail at >= 1,000 counts, where the misfit outgrows the noise). The
    // novelty thresholds standardise by these scores (outlier_guard.hpp); what is checked here is that no count
    // level puts them off by more than that.
    CHECK(s.live.n == 2048);
    CHECK(std::abs(s.live.Median()) < 1.2);
    CHECK(s.live.RobustSd() > 0.6);
    CHECK(s.live.RobustSd() < 2.0);
  }
}

}  // namespace specwatch
