#include <doctest/doctest.h>

#include "operators/model/denoiser.hpp"
#include "server/pipeline.hpp"
#include "tests/unit/server/pipeline_fixture.hpp"

#include <prometheus/registry.h>
#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>
#include <tbb/global_control.h>

#include <map>
#include <random>
#include <mutex>
#include <thread>

using namespace specwatch;
using namespace specwatch::server;

namespace {

constexpr int kChannels = 64;
constexpr int kSpectraPerFrame = 16;

// Spectra on a 3-component subspace plus Gaussian noise: something a rank-3 model can learn.
BatchPtr MakeFrame(uint64_t number, std::mt19937& rng) {
  static const Eigen::MatrixXf basis = [] {
    std::mt19937 g(7);
    std::uniform_real_distribution<float> u(0.0f, 50.0f);
    Eigen::MatrixXf b(kChannels, 3);
    for (int i = 0; i < b.size(); ++i) b.data()[i] = u(g);
    return b;
  }();
  std::uniform_real_distribution<float> a(0.0f, 1.0f);
  std::normal_distribution<float> noise(0.0f, 0.5f);
  auto batch = std::make_shared<SpectrumBatch>();
  batch->meta.series_id = "test";
  batch->meta.frame_number = number;
  batch->counts.resize(kChannels, kSpectraPerFrame);
  for (int s = 0; s < kSpectraPerFrame; ++s) {
    Eigen::Vector3f w(a(rng), a(rng), a(rng));
    batch->counts.col(s) = basis * w;
    for (int c = 0; c < kChannels; ++c) batch->counts(c, s) += noise(rng);
  }
  batch->positions.resize(kSpectraPerFrame);
  return batch;
}

using Fixture = test::PipelineFixture;

using test::DrainQueue;

// Plays the publisher thread: takes messages off the queue as they come, so in-flight slots free up.
class Collector {
 public:
  explicit Collector(OutputQueue& q) : thread_([this, &q] {
    OutMessage m;
    while (!stop_.load()) {
      if (q.PopFor(&m, std::chrono::milliseconds(5))) {
        m.token.reset();  // "published": the frame's slot is free again
        std::lock_guard lock(mutex_);
        got_.push_back(std::move(m));
      }
    }
  }) {}
  ~Collector() {
    stop_.store(true);
    thread_.join();
  }
  size_t Count() {
    std::lock_guard lock(mutex_);
    return got_.size();
  }

 private:
  std::atomic<bool> stop_{false};
  std::mutex mutex_;
  std::vector<OutMessage> got_;
  std::thread thread_;
};

}  // namespace

TEST_CASE("the flow graph publishes every frame once, in order, with 1 and with 2 threads") {
  for (int threads : {1, 2}) {
    CAPTURE(threads);
    tbb::global_control limit(tbb::global_control::max_allowed_parallelism, threads + 1);
    Fixture f;
    f.options.compute_threads = static_cast<uint32_t>(threads);
    f.options.max_frames_in_flight = 64;
    std::mt19937 rng(1);
    std::vector<BatchPtr> sent;
    std::vector<OutMessage> published;
    {
      Pipeline p(f.options, f.metrics, f.out, f.log, f.clock);
      WorkItem start;
      start.kind = WorkItem::Kind::kSeriesStart;
      start.series.id = "test";
      p.Submit(start);
      for (uint64_t n = 0; n < 40; ++n) {
        WorkItem w;
        w.batch = MakeFrame(n, rng);
        sent.push_back(w.batch);
        p.Submit(std::move(w));
        if (n % 8 == 7) {  // consume as a publisher would, so slots free up
          for (auto& m : DrainQueue(f.out)) published.push_back(std::move(m));
        }
        // Denoising runs ahead of the model update: let the first half be learnt, so the second half
        // is denoised with a warmed-up model.
        if (n == 19) p.Drain();
      }
      WorkItem end;
      end.kind = WorkItem::Kind::kSeriesEnd;
      p.Submit(end);
      p.Drain();
      for (auto& m : DrainQueue(f.out)) published.push_back(std::move(m));
      CHECK(f.metrics.model.model_spectra.Value() == doctest::Approx(40.0 * kSpectraPerFrame));
      CHECK(p.Model()->rank == 3);
    }
    REQUIRE(published.size() == 41);  // 40 denoised + the series-end snapshot request
    for (size_t i = 0; i < 40; ++i) {
      REQUIRE(published[i].kind == OutMessage::Kind::kEnvelope);
      CHECK(published[i].topic == "denoised");
      CHECK(published[i].envelope->denoised().frame_number() == i);
      CHECK(published[i].spectra == kSpectraPerFrame);
      CHECK(published[i].payload.bytes == size_t{kChannels} * kSpectraPerFrame * sizeof(float));
    }
    CHECK(published[40].kind == OutMessage::Kind::kSnapshotRequest);
    CHECK(published[40].reason == "series_end");
    // Before warm-up the data pass through unchanged (rank 0); after it the model denoises.
    CHECK(published[0].envelope->denoised().rank() == 0);
    for (size_t i = 20; i < 40; ++i) CHECK(published[i].envelope->denoised().rank() == 3);
    const auto& last = published[39];
    CHECK(last.envelope->denoised().rank() == 3);
    const float* den = static_cast<const float*>(last.payload.data);
    Eigen::Map<const CountsMatrix> denoised(den, kChannels, kSpectraPerFrame);
    // Noise sd 0.5 per channel; a rank-3 projection keeps ~3/64 of it, so the residual norm is close to
    // 0.5 * sqrt(61) ~ 3.9 and the denoised spectrum is nearer the noiseless one than the raw.
    const auto& raw = sent[39]->counts;
    for (int s = 0; s < kSpectraPerFrame; ++s) {
      const float r = last.envelope->denoised().residual_norm(s);
      CHECK(r == doctest::Approx((raw.col(s) - denoised.col(s)).norm()).epsilon(1e-4));
      CHECK(r > 2.0f);
      CHECK(r < 6.0f);
    }
  }
}

TEST_CASE("no more than max_frames_in_flight frames are inside at once") {
  Fixture f;
  f.options.max_frames_in_flight = 3;
  std::mt19937 rng(2);
  Pipeline p(f.options, f.metrics, f.out, f.log, f.clock);
  std::atomic<int> submitted{0};
  std::thread feeder([&] {
    for (uint64_t n = 0; n < 10; ++n) {
      WorkItem w;
      w.batch = MakeFrame(n, rng);
      p.Submit(std::move(w));
      ++submitted;
    }
  });
  // Nobody publishes: the messages (and their slots) stay queued, so the feeder blocks after 3.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  CHECK(submitted.load() == 3);
  CHECK(p.InFlight() == 3);
  CHECK(f.metrics.stages.frames_in_flight.Value() == 3);
  size_t consumed = 0;
  while (consumed < 10) consumed += DrainQueue(f.out).size();
  feeder.join();
  p.Drain();
  CHECK(submitted.load() == 10);
  CHECK(p.InFlight() == 0);
}

TEST_CASE("freeze stops learning, resume restarts it, reset forgets") {
  Fixture f;
  std::mt19937 rng(3);
  Pipeline p(f.options, f.metrics, f.out, f.log, f.clock);
  Collector publisher(f.out);
  auto feed = [&](int frames) {
    for (int n = 0; n < frames; ++n) {
      static uint64_t number = 0;
      WorkItem w;
      w.batch = MakeFrame(number++, rng);
      p.Submit(std::move(w));
    }
    p.Drain();
  };
  feed(8);
  const auto version = p.Model()->version;
  CHECK(version > 0);
  p.SetFrozen(true);
  feed(8);
  CHECK(p.Model()->version == version);
  CHECK(f.metrics.model.model_spectra_skipped.Value() == doctest::Approx(8.0 * kSpectraPerFrame));
  p.SetFrozen(false);
  feed(8);
  CHECK(p.Model()->version > version);
  p.RequestReset();
  p.Drain();
  CHECK(p.Model()->version == 0);
  CHECK(p.Model()->spectra_seen == 0);
  CHECK(p.SpectraLearnt() == 0);
}

TEST_CASE("when_idle learns from a subset when updates cannot keep up, but denoises everything") {
  Fixture f;
  f.options.model_updates = ModelUpdates::kWhenIdle;
  f.options.max_frames_in_flight = 64;
  std::mt19937 rng(4);
  Pipeline p(f.options, f.metrics, f.out, f.log, f.clock);
  Collector publisher(f.out);
  for (uint64_t n = 0; n < 200; ++n) {
    WorkItem w;
    w.batch = MakeFrame(n, rng);
    p.Submit(std::move(w));
  }
  p.Drain();
  // Everything is queued once Drain returns; wait (bounded) for the collector to take it.
  for (int i = 0; i < 1000 && publisher.Count() < 200; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  CHECK(publisher.Count() == 200);
  const double learnt = f.metrics.model.model_spectra.Value();
  const double skipped = f.metrics.model.model_spectra_skipped.Value();
  CHECK(learnt + skipped == doctest::Approx(200.0 * kSpectraPerFrame));
  CHECK(learnt > 0);
}

TEST_CASE("denoised_payload scores: each model's snapshot is queued before its first use, scores rebuild spectra") {
  tbb::global_control limit(tbb::global_control::max_allowed_parallelism, 3);
  Fixture f;
  f.options.compute_threads = 2;
  f.options.max_frames_in_flight = 64;
  f.options.denoised_payload = DenoisedPayload::kScores;
  std::mt19937 rng(5);
  std::vector<BatchPtr> sent;
  std::vector<OutMessage> queued;
  {
    Pipeline p(f.options, f.metrics, f.out, f.log, f.clock);
    for (uint64_t n = 0; n < 48; ++n) {  // no Drain in between: denoising overlaps the model updates
      WorkItem w;
      w.batch = MakeFrame(n, rng);
      sent.push_back(w.batch);
      p.Submit(std::move(w));
      if (n == 7) p.Drain();  // warmed up (64 spectra) before frame 8; later updates overlap denoising
      if (n % 8 == 7) {
        for (auto& m : DrainQueue(f.out)) queued.push_back(std::move(m));
      }
    }
    p.Drain();
    for (auto& m : DrainQueue(f.out)) queued.push_back(std::move(m));
  }
  std::map<uint64_t, std::shared_ptr<const PcaModel>> snapshots;  // what a subscriber holds, in queue order
  int rebuilt = 0, passed_through = 0;
  for (const auto& m : queued) {
    if (m.kind == OutMessage::Kind::kSnapshotRequest) {
      REQUIRE(m.model);
      CHECK(m.reason == "model_update");
      CHECK(snapshots.count(m.model->version) == 0);  // one snapshot per version
      snapshots[m.model->version] = m.model;
      continue;
    }
    REQUIRE(m.kind == OutMessage::Kind::kEnvelope);
    const auto& d = m.envelope->denoised();
    const auto& raw = sent.at(d.frame_number())->counts;
    if (!d.spectra_omitted()) {  // before warm-up: the spectra as received, no scores
      CHECK(d.rank() == 0);
      CHECK(d.scores_size() == 0);
      CHECK(m.payload.bytes == size_t{kChannels} * kSpectraPerFrame * sizeof(float));
      ++passed_through;
      continue;
    }
    CHECK(m.payload.bytes == 0);
    REQUIRE(snapshots.count(d.model_version()) == 1);
    const PcaModel& model = *snapshots[d.model_version()];
    const int r = static_cast<int>(d.rank());
    REQUIRE(r == 3);
    REQUIRE(d.scores_size() == kSpectraPerFrame * r);
    for (int s = 0; s < kSpectraPerFrame; ++s) {
      const Eigen::Map<const Eigen::VectorXf> score(d.scores().data() + s * r, r);
      const Eigen::VectorXf x_hat = model.mean + model.basis.leftCols(r) * score;
      // The residual the service computed from its own reconstruction matches the client's rebuild.
      CHECK(d.residual_norm(s) == doctest::Approx((raw.col(s) - x_hat).norm()).epsilon(1e-3));
    }
    ++rebuilt;
  }
  CHECK(passed_through + rebuilt == 48);
  CHECK(rebuilt >= 40);  // frames 8-47 at least
  CHECK(snapshots.size() >= 2);
}

TEST_CASE("a stage that throws: counted by stage, the frame rejected as stage_error, the graph keeps running") {
  // Frame 3 fails in the score stage, 5 in the session stage, 7 in the encode stage (not published), 9 in the
  // learn stage (already published: its spectra are not learnt). Every other frame is published, in order.
  const std::map<uint64_t, Stage> failing = {
      {3, Stage::kScore}, {5, Stage::kSession}, {7, Stage::kEncode}, {9, Stage::kLearn}};
  StageFaultForTests fault = [&failing](Stage stage, uint64_t frame) {
    const auto it = failing.find(frame);
    if (it != failing.end() && it->second == stage) throw std::runtime_error("injected");
  };
  for (const int threads : {1, 2}) {
    CAPTURE(threads);
    tbb::global_control limit(tbb::global_control::max_allowed_parallelism, static_cast<size_t>(threads));
    Fixture f;
    f.options.compute_threads = static_cast<uint32_t>(threads);
    f.options.max_frames_in_flight = 64;  // nobody publishes here: every frame's messages stay queued
    std::mt19937 rng(5);
    std::vector<uint64_t> published;
    {
      Pipeline p(f.options, f.metrics, f.out, f.log, f.clock, nullptr, fault);
      for (uint64_t n = 0; n < 20; ++n) {
        WorkItem w;
        w.batch = MakeFrame(n, rng);
        p.Submit(std::move(w));
      }
      p.Drain();
      for (const OutMessage& m : f.Drain()) {
        if (m.kind == OutMessage::Kind::kEnvelope && m.topic == "denoised") {
          published.push_back(m.envelope->denoised().frame_number());
        }
      }
      CHECK(p.InFlight() == 0);  // the failed frames' slots were freed too
    }
    const std::vector<uint64_t> expected = {0, 1, 2, 4, 6, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19};
    CHECK(published == expected);
    using stream::RejectReason;
    CHECK(f.metrics.intake.FramesRejected(RejectReason::kStageError).Value() == 3);
    CHECK(f.metrics.intake.SpectraRejected(RejectReason::kStageError).Value() == 3 * kSpectraPerFrame);
    for (const auto& [frame, stage] : failing) {
      CAPTURE(frame);
      CHECK(f.metrics.stages.StageErrors(stage).Value() == 1);
    }
    // Published + rejected = every frame's spectra. Frames 3 and 5 never reached the model, 9's update failed;
    // 7 failed after its update was routed (encoding), so the model learnt it although it was not published.
    CHECK(static_cast<double>(published.size()) * kSpectraPerFrame +
              f.metrics.intake.SpectraRejected(RejectReason::kStageError).Value() == 20 * kSpectraPerFrame);
    CHECK(f.metrics.model.model_spectra.Value() == (20 - 3) * kSpectraPerFrame);
    CHECK(f.metrics.stages.StageCpu(Stage::kScore).Value() > 0);
  }
}
