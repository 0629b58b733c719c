// The pipeline's model events and residual maps, and a pipeline that starts from a restored model.
#include <doctest/doctest.h>

#include "server/pipeline.hpp"
#include "tests/unit/server/pipeline_fixture.hpp"

#include <prometheus/registry.h>
#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>

#include <cmath>
#include <random>
#include <set>

using namespace specwatch;
using namespace specwatch::server;

namespace {

constexpr int kChannels = 48;

/// Frames of spectra on `active` of 4 fixed orthonormal directions (amplitudes 40, 30, 20, 10) plus unit
/// Gaussian noise, raster positions on a width x height scan.
class Source {
 public:
  Source(uint32_t width, uint32_t height) : shape_{width, height}, gen_(17) {
    std::normal_distribution<float> n;
    const Eigen::MatrixXf g = Eigen::MatrixXf::NullaryExpr(kChannels, 4, [&] { return n(gen_); });
    basis_ = Eigen::HouseholderQR<Eigen::MatrixXf>(g).householderQ() * Eigen::MatrixXf::Identity(kChannels, 4);
    mean_ = Eigen::VectorXf::LinSpaced(kChannels, 100.0f, 200.0f);
  }
  BatchPtr Frame(int spectra, int active, const std::set<uint64_t>& odd_ones = {}) {
    std::normal_distribution<float> n;
    auto b = std::make_shared<SpectrumBatch>();
    b->meta.series_id = "s";
    b->meta.frame_number = number_++;
    b->meta.scan_shape = shape_;
    b->counts.resize(kChannels, spectra);
    const float amplitude[4] = {40, 30, 20, 10};
    for (int i = 0; i < spectra; ++i) {
      const uint64_t k = next_index_++;
      Eigen::VectorXf x = mean_;
      for (int c = 0; c < active; ++c) x += basis_.col(c) * amplitude[c] * n(gen_);
      for (int j = 0; j < kChannels; ++j) x(j) += n(gen_);
      if (odd_ones.count(k % shape_.Positions())) x(7) += 60.0f;  // a feature the model has not learnt
      b->counts.col(i) = x;
      const uint64_t in_pass = k % shape_.Positions();
      b->positions.push_back({static_cast<uint32_t>(in_pass % shape_.width),
                              static_cast<uint32_t>(in_pass / shape_.width),
                              static_cast<uint32_t>(k / shape_.Positions())});
    }
    return b;
  }

 private:
  ScanShape shape_;
  std::mt19937 gen_;
  Eigen::MatrixXf basis_;
  Eigen::VectorXf mean_;
  uint64_t number_ = 0;
  uint64_t next_index_ = 0;
};

struct Fixture : test::PipelineFixture {
  Fixture() {
    options.pca.rank = 4;
    options.max_frames_in_flight = 4096;
  }
};

void Submit(Pipeline& p, BatchPtr batch) {
  WorkItem w;
  w.batch = std::move(batch);
  p.Submit(std::move(w));
}

}  // namespace

TEST_CASE("auto_rank: a rank change between versions is queued as a 'model' RankChange and counted") {
  Fixture f;
  f.options.pca.auto_rank = true;
  f.options.pca.rank_min = 1;
  Source source(16, 16);
  std::vector<OutMessage> got;
  {
    Pipeline p(f.options, f.metrics, f.out, f.log, f.clock);
    for (int n = 0; n < 16; ++n) {  // one direction
      Submit(p, source.Frame(16, 1));
      p.Drain();
      for (auto& m : f.Drain()) got.push_back(std::move(m));
    }
    CHECK(p.Model()->rank == 1);
    for (int n = 0; n < 64; ++n) {  // three: the rank must follow
      Submit(p, source.Frame(16, 3));
      p.Drain();
      for (auto& m : f.Drain()) got.push_back(std::move(m));
    }
    CHECK(p.Model()->rank == 3);
  }
  std::vector<wire::RankChange> changes;
  for (const auto& m : got) {
    if (m.topic == "model") changes.push_back(m.envelope->rank_change());
  }
  REQUIRE(!changes.empty());
  CHECK(f.metrics.model.model_rank_changes.Value() == doctest::Approx(static_cast<double>(changes.size())));
  CHECK(changes.back().new_rank() == 3);
  // The first few versions, learnt from a handful of spectra, may hold a higher rank; by version 16 (the end
  // of the one-direction part) it is 1, and the changes after it lead to 3.
  uint32_t at_16 = 0;
  for (const auto& c : changes) {
    if (c.model_version() <= 16) at_16 = c.new_rank();
  }
  CHECK(at_16 == 1);
  CHECK(changes.back().model_version() > 16);
  uint32_t rank = changes.front().old_rank();
  uint64_t version = 0;
  for (const auto& c : changes) {  // a chain: each starts where the previous ended, versions increase
    CHECK(c.old_rank() == rank);
    CHECK(c.new_rank() != c.old_rank());
    CHECK(c.model_version() > version);
    CHECK(c.auto_rank());
    CHECK(c.rank_threshold() > 0);
    CHECK(c.noise_sigma() > 0);
    // The singular values around the threshold: those kept above it, the next one below (unless clamped), with
    // the hysteresis band τ·(1 ± h) in between.
    const int first = static_cast<int>(c.first_index());
    CHECK(first == std::max(0, static_cast<int>(std::min(c.old_rank(), c.new_rank())) - 2));
    const int below = static_cast<int>(c.new_rank()) - first;  // index of the first value not kept
    REQUIRE(below < c.singular_values_size());
    CHECK(c.rank_hysteresis() == doctest::Approx(f.options.pca.rank_hysteresis));
    CHECK(c.singular_values(below - 1) > c.rank_threshold() * (1.0 - c.rank_hysteresis()));
    CHECK(c.singular_values(below) <= c.rank_threshold() * (1.0 + c.rank_hysteresis()));
    rank = c.new_rank();
    version = c.model_version();
  }
  CHECK(f.metrics.model.model_rank.Value() == 3);
}

TEST_CASE("residual maps: one per pass, laid out by position, equal to the published residuals") {
  Fixture f;
  f.options.pca.rank = 2;
  Source source(8, 6);  // 48 positions, frames of 8 spectra: a pass every 6 frames
  const std::set<uint64_t> odd = {13, 14, 30};
  std::vector<OutMessage> got;
  {
    Pipeline p(f.options, f.metrics, f.out, f.log, f.clock);
    WorkItem start;
    start.kind = WorkItem::Kind::kSeriesStart;
    start.series.id = "s";
    p.Submit(std::move(start));
    for (int n = 0; n < 20; ++n) {  // 3 passes and 2/3 of a fourth
      Submit(p, source.Frame(8, 2, odd));
      p.Drain();  // learn before the next frame: warm from frame 8 on
      for (auto& m : f.Drain()) got.push_back(std::move(m));
    }
    WorkItem end;
    end.kind = WorkItem::Kind::kSeriesEnd;
    end.series_end.id = "s";
    p.Submit(std::move(end));
    p.Drain();
    for (auto& m : f.Drain()) got.push_back(std::move(m));
  }
  std::map<std::pair<uint32_t, uint64_t>, float> residual;  // (pass, x + 8 y) -> published residual norm
  std::vector<const OutMessage*> maps;
  for (const auto& m : got) {
    if (m.topic == "denoised") {
      const auto& d = m.envelope->denoised();
      if (d.rank() == 0) continue;
      for (int i = 0; i < d.positions_size(); ++i) {
        residual[{d.positions(i).scan_pass(), d.positions(i).x() + 8 * d.positions(i).y()}] = d.residual_norm(i);
      }
    } else if (m.topic == "residual_map") {
      maps.push_back(&m);
    }
  }
  REQUIRE(maps.size() == 4);
  for (uint32_t pass = 0; pass < 4; ++pass) {
    const auto& r = maps[pass]->envelope->residual_map();
    CAPTURE(pass);
    CHECK(r.scan_pass() == pass);
    CHECK(r.width() == 8);
    CHECK(r.height() == 6);
    CHECK(r.closed_by() == (pass < 3 ? "complete" : "series_end"));
    REQUIRE(maps[pass]->payload.bytes == 48 * sizeof(float));
    const float* v = static_cast<const float*>(maps[pass]->payload.data);
    uint64_t scored = 0;
    for (uint64_t at = 0; at < 48; ++at) {
      auto it = residual.find({pass, at});
      if (it == residual.end()) {
        CHECK(std::isnan(v[at]));
      } else {
        CHECK(v[at] == it->second);
        ++scored;
      }
    }
    CHECK(r.positions_scored() == scored);
    if (pass == 0) continue;  // mostly warm-up
    CHECK(r.statistic() == "residual_norm");
    // The odd positions stand out: at or above median + 5 robust sigma, and nothing else does.
    uint64_t odd_scored = 0;
    for (uint64_t at : odd) {
      if (std::isnan(v[at])) continue;  // denoised during warm-up
      CHECK(v[at] >= r.outlier_threshold());
      ++odd_scored;
    }
    CHECK(odd_scored > 0);
    CHECK(r.outliers() == odd_scored);
  }
  CHECK(f.metrics.monitor.residual_map_outliers.Value() == doctest::Approx(2.0));  // the last map: 13 and 14
}

TEST_CASE("a pipeline started from a restored model denoises the first frame with it and learns on") {
  Fixture f;
  f.options.pca.rank = 3;
  Source source(16, 16);
  std::shared_ptr<const PcaModel> saved;
  {
    Pipeline p(f.options, f.metrics, f.out, f.log, f.clock);
    for (int n = 0; n < 12; ++n) Submit(p, source.Frame(16, 3));
    p.Drain();
    f.Drain();
    auto m = std::make_shared<PcaModel>(*p.Model());  // as a snapshot keeps it: rank components
    m->basis = m->basis.leftCols(m->rank).eval();
    m->singular_values = m->singular_values.head(m->rank).eval();
    saved = m;
  }
  Pipeline p(f.options, f.metrics, f.out, f.log, f.clock, saved);
  CHECK(p.Model()->version == saved->version);
  CHECK(p.Model()->rank == 3);
  CHECK(f.metrics.model.model_version.Value() == doctest::Approx(static_cast<double>(saved->version)));
  Submit(p, source.Frame(16, 3));
  p.Drain();
  std::vector<OutMessage> got;
  for (auto& m : f.Drain()) {
    if (m.topic == "denoised") got.push_back(std::move(m));
  }
  REQUIRE(got.size() == 1);
  const auto& d = got[0].envelope->denoised();
  CHECK(d.rank() == 3);  // no warm-up: the restored model is used at once
  CHECK(d.model_version() == saved->version);
  CHECK(p.Model()->version == saved->version + 1);  // and learning went on from it
}
