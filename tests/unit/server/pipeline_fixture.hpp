#pragma once
/// What the Pipeline tests need around a graph: options for a small, unweighted model that learns every frame,
/// metrics on a private registry, the output queue, a silent logger.

#include "server/pipeline.hpp"

#include <prometheus/registry.h>
#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <memory>
#include <vector>

namespace specwatch::server::test {

/// Everything queued so far, without waiting.
inline std::vector<OutMessage> DrainQueue(OutputQueue& q) {
  std::vector<OutMessage> all;
  OutMessage m;
  while (q.PopFor(&m, std::chrono::milliseconds(0))) all.push_back(std::move(m));
  return all;
}

struct PipelineFixture {
  ServiceOptions options;
  prometheus::Registry registry;
  ServiceMetrics metrics{registry};
  OutputQueue out;
  FakeClock clock;  // still: the when_idle budget and the advice rate limit see no time pass
  std::shared_ptr<spdlog::logger> log =
      std::make_shared<spdlog::logger>("test", std::make_shared<spdlog::sinks::null_sink_mt>());
  PipelineFixture() {
    options.pca.rank = 3;
    options.pca.oversample = 4;
    options.pca.block = 16;
    options.warmup_spectra = 64;
    options.model_updates = ModelUpdates::kAll;
    options.weighting = Weighting::kNone;  // these tests are about the graph; weighting has its own
    // ... and so is the monitor (novelty, drift): test_pipeline_monitor.cpp turns it on.
    options.monitor.novelty = false;
    options.monitor.energy = false;
    options.monitor.statistics = false;
    options.subspace_drift_enabled = false;
  }
  std::vector<OutMessage> Drain() { return DrainQueue(out); }
};

}  // namespace specwatch::server::test
