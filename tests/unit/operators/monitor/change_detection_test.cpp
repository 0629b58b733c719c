// CUSUM on block means: false alarms over 10^6 nominal spectra, detection and onset of a small shift, the
// Siegmund run-length formula against simulation, recalibration, clipping.
#include "operators/monitor/change_detection.hpp"

#include "operators/core/config_error.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

namespace specwatch {
namespace {

/// n scores of a nominal distribution with mean `shift` (in score units): Gaussian of sd 1.05 (the measured sd
/// of the deviance z), or a standardised Gamma(1) (exponential: skewness 2, a far heavier tail than z's).
std::vector<float> Scores(int n, double shift, bool gamma, std::mt19937_64& gen) {
  std::normal_distribution<double> normal(0.0, 1.05);
  std::gamma_distribution<double> g(1.0, 1.0);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = static_cast<float>(shift + (gamma ? g(gen) - 1.0 : normal(gen)));
  return v;
}

/// Feeds `v` in slices of `slice` scores starting at spectrum `first`; collects the alarms.
std::vector<ChangeAlarm> Feed(BlockCusum& c, const std::vector<float>& v, uint64_t first, size_t slice = 1000) {
  std::vector<ChangeAlarm> all;
  for (size_t i = 0; i < v.size(); i += slice) {
    const size_t n = std::min(slice, v.size() - i);
    for (const ChangeAlarm& a : c.Add(std::span<const float>(v.data() + i, n), first + i)) all.push_back(a);
  }
  return all;
}

}  // namespace

TEST_CASE("BlockCusumOptions: Validate names the field; the default h meets the false-alarm budget") {
  CHECK_NOTHROW(BlockCusumOptions{}.Validate());
  BlockCusumOptions o;
  o.block_spectra = 0;
  CHECK_THROWS_WITH_AS(o.Validate(), doctest::Contains("block_spectra must be >= 1"), ConfigError);
  o = {};
  o.calibration_blocks = 2;
  CHECK_THROWS_WITH_AS(BlockCusum{o}, doctest::Contains("calibration_blocks must be >= 8"), ConfigError);
  o = {};
  o.h_sd = -1;
  CHECK_THROWS_WITH_AS(o.Validate(), doctest::Contains("h_sd must be >= 0"), ConfigError);

  // Siegmund's in-control ARL for k = 0.5, by hand: b = h + 1.166, ARL0 = (e^b − b − 1)/0.5 one-sided.
  const double b = 4.0 + 1.166;
  CHECK(SiegmundArl(0.5, 4.0, 0.0) == doctest::Approx(2.0 * (std::exp(b) - b - 1.0)).epsilon(1e-12));
  CHECK(SiegmundArlTwoSided(0.5, 4.0, 0.0) == doctest::Approx(std::exp(b) - b - 1.0).epsilon(1e-12));
  // δ = 0 (shift of exactly k): the limit b², continuous across.
  CHECK(SiegmundArl(0.5, 4.0, 0.5) == doctest::Approx(b * b).epsilon(1e-9));
  CHECK(SiegmundArl(0.5, 4.0, 0.5 + 1e-6) == doctest::Approx(b * b).epsilon(1e-5));

  // Default: 10^8 spectra / 256 per block = 390625 blocks, two-sided, the smallest such h.
  const double h = BlockCusumOptions{}.DecisionInterval();
  CHECK(SiegmundArlTwoSided(0.5, h, 0.0) >= 1e8 / 256);
  CHECK(SiegmundArlTwoSided(0.5, h - 1e-3, 0.0) < 1e8 / 256);
  CHECK(h == doctest::Approx(11.71).epsilon(0.01));
  CHECK(BlockCusum{}.decision_interval_sd() == h);
}

TEST_CASE("BlockCusum: no alarm over 10^6 nominal spectra, Gaussian or heavy-tailed, nor from clipped outliers") {
  for (const bool gamma : {false, true}) {
    INFO("gamma ", gamma);
    std::mt19937_64 gen(gamma ? 41 : 42);
    BlockCusum cusum;
    const std::vector<float> v = Scores(1000000, 0.0, gamma, gen);
    CHECK(Feed(cusum, v, 0).empty());
    CHECK(cusum.calibrated());
    CHECK(cusum.blocks() == 1000000 / 256);
    // The calibrated block-mean sd is the score sd / 16.
    CHECK(cusum.baseline_sd() == doctest::Approx((gamma ? 1.0 : 1.05) / 16).epsilon(0.25));
  }
  // Rare novel spectra (1 in 10^4, score 1000) clipped at the threshold 5 leave block means alone; unclipped,
  // one of them moves its block mean by 4 score units = 60 block sd and raises an alarm.
  std::mt19937_64 gen(43);
  std::vector<float> v = Scores(1000000, 0.0, false, gen);
  std::uniform_int_distribution<size_t> where(0, v.size() - 1);
  for (int i = 0; i < 100; ++i) v[where(gen)] = 1000.0f;
  BlockCusum with_clip(BlockCusumOptions{}, 5.0);
  CHECK(Feed(with_clip, v, 0).empty());
  BlockCusum without_clip;
  CHECK_FALSE(Feed(without_clip, v, 0).empty());
}

TEST_CASE("BlockCusum: a mean shift of 0.1 score sd is detected within a few thousand spectra, onset near truth") {
  // Over 20 seeds: the shift starts at a non-block-aligned spectrum after calibration and some nominal blocks.
  // Expected delay (Siegmund, shift 0.1/(1.05/16) = 1.52 block sd): ~12 blocks.
  constexpr uint64_t kTruth = 40000 + 37;
  const double expected_delay_blocks = SiegmundArlTwoSided(0.5, BlockCusumOptions{}.DecisionInterval(), 1.52);
  CHECK(expected_delay_blocks == doctest::Approx(12.0).epsilon(0.25));
  std::vector<double> onset_error_blocks;
  std::vector<double> magnitudes;
  for (int seed = 0; seed < 20; ++seed) {
    std::mt19937_64 gen(100 + seed);
    std::vector<float> v = Scores(static_cast<int>(kTruth), 0.0, false, gen);
    const std::vector<float> after = Scores(20000, 0.1, false, gen);
    v.insert(v.end(), after.begin(), after.end());
    BlockCusum cusum;
    const std::vector<ChangeAlarm> alarms = Feed(cusum, v, 1000, 777);  // spectra indices start at 1000
    REQUIRE(!alarms.empty());
    const ChangeAlarm& a = alarms.front();
    CHECK(a.direction == ChangeDirection::kUp);
    CHECK(a.detected_spectrum > 1000 + kTruth);  // no false alarm before the change
    CHECK(a.detected_spectrum < 1000 + kTruth + 30 * 256);
    CHECK(a.statistic_sd > cusum.decision_interval_sd());
    onset_error_blocks.push_back((static_cast<double>(a.onset_spectrum) - (1000.0 + kTruth)) / 256.0);
    magnitudes.push_back(a.magnitude);
  }
  std::sort(onset_error_blocks.begin(), onset_error_blocks.end());
  std::sort(magnitudes.begin(), magnitudes.end());
  INFO("onset error, blocks: median ", onset_error_blocks[10], ", range ", onset_error_blocks.front(), " .. ",
          onset_error_blocks.back(), "; magnitude median ", magnitudes[10]);
  // Typically the excursion starts in the block holding the change (error -0.39 blocks: 37 + 64 spectra into a
  // block of 256) or the next; a chance excursion running into the change, helped by an error of the learnt
  // baseline, makes it early now and then (see change_detection.hpp). Measured with these seeds: 14 of 20
  // within 1.7 blocks, 19 of 20 within 7 blocks.
  CHECK(std::abs(onset_error_blocks[10]) <= 1.0);
  const auto within = [&](double blocks) {
    return std::count_if(onset_error_blocks.begin(), onset_error_blocks.end(),
                         [&](double e) { return std::abs(e) <= blocks; });
  };
  CHECK(within(1.7) >= 12);
  CHECK(within(7.0) >= 18);
  CHECK(magnitudes[10] == doctest::Approx(0.1).epsilon(0.3));
}

TEST_CASE("BlockCusum: Siegmund's ARL against the simulated run length at small h, in and out of control") {
  // Known baseline (0, 1), one spectrum per block: the run lengths of the recursion itself. ~3000 runs each;
  // the sample mean's relative error is ~1/sqrt(3000) = 2%; Siegmund's approximation is good to a few %.
  struct Case {
    double h, mean_sd;
  };
  for (const Case c : {Case{2.0, 0.0}, Case{3.0, 0.0}, Case{4.0, 1.0}}) {
    BlockCusumOptions o;
    o.block_spectra = 1;
    o.h_sd = c.h;
    BlockCusum cusum(o);
    std::mt19937_64 gen(51);
    std::normal_distribution<double> normal(c.mean_sd, 1.0);
    const double want = SiegmundArlTwoSided(0.5, c.h, c.mean_sd);
    uint64_t index = 0;
    double total = 0;
    int runs = 0;
    std::vector<float> chunk(64);
    cusum.SetBaseline(0.0, 1.0);
    uint64_t start = 0;
    while (runs < 3000) {
      for (float& x : chunk) x = static_cast<float>(normal(gen));
      // Only the first alarm of a chunk counts (after it the cusum recalibrates); the rest of the chunk is
      // discarded and the next run starts at the next chunk.
      const std::vector<ChangeAlarm> alarms = cusum.Add(chunk, index);
      if (!alarms.empty()) {
        total += static_cast<double>(alarms.front().detected_spectrum - start + 1);
        ++runs;
        cusum.SetBaseline(0.0, 1.0);
        start = index + chunk.size();
      }
      index += chunk.size();
    }
    const double simulated = total / runs;
    INFO("h ", c.h, " mean ", c.mean_sd, ": simulated ARL ", simulated, ", Siegmund ", want);
    // Measured: 19.8 vs 19.5, 58.1 vs 59.3, 8.39 vs 8.34.
    CHECK(simulated == doctest::Approx(want).epsilon(0.1));
  }
}

TEST_CASE("BlockCusum: after an alarm the new level is calibrated; a downward step gives a negative magnitude") {
  std::mt19937_64 gen(61);
  std::vector<float> v = Scores(30000, 0.0, false, gen);
  const std::vector<float> low = Scores(200000, -0.3, false, gen);
  v.insert(v.end(), low.begin(), low.end());
  BlockCusum cusum;
  const std::vector<ChangeAlarm> alarms = Feed(cusum, v, 0);
  REQUIRE(alarms.size() == 1);  // one change, one alarm: the level after it is the new baseline
  CHECK(alarms[0].direction == ChangeDirection::kDown);
  CHECK(alarms[0].magnitude == doctest::Approx(-0.3).epsilon(0.3));
  CHECK(std::abs(static_cast<double>(alarms[0].onset_spectrum) - 30000.0) < 3 * 256);
  CHECK(cusum.calibrated());
  CHECK(cusum.baseline_mean() == doctest::Approx(-0.3).epsilon(0.1));

  // The same stream sliced differently gives the same alarms; non-finite scores are skipped, not counted.
  BlockCusum again;
  const std::vector<ChangeAlarm> sliced = Feed(again, v, 0, 1);
  REQUIRE(sliced.size() == 1);
  CHECK(sliced[0].onset_spectrum == alarms[0].onset_spectrum);
  CHECK(sliced[0].detected_spectrum == alarms[0].detected_spectrum);
  const std::vector<float> nan = {NAN, INFINITY};
  CHECK(again.Add(nan, 0).empty());
  CHECK(again.skipped_spectra() == 2);

  cusum.Reset();
  CHECK_FALSE(cusum.calibrated());
  CHECK(cusum.blocks() == 0);
  // While calibrating no alarm, whatever the data.
  CHECK(Feed(cusum, Scores(63 * 256, 5.0, false, gen), 0).empty());
}

}  // namespace specwatch
