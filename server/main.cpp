// specwatch: the service's entry point. Configuration errors exit 2 with a message naming the problem;
// SIGINT/SIGTERM stop the service cleanly (exit 0).

#include "operators/core/config_error.hpp"
#include "server/model_snapshot.hpp"
#include "server/pipeline.hpp"
#include "server/service.hpp"
#include "server/service_metrics.hpp"
#include "server/config_keys.hpp"
#include "server/service_options.hpp"
#include "stream/large_message_heap.hpp"

#include <prometheus/exposer.h>
#include <prometheus/registry.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <tbb/global_control.h>

#include <csignal>
#include <iostream>
#include <optional>
#include <pthread.h>
#include <thread>

int main(int argc, char** argv) {
  using namespace specwatch;
  server::CommandLine cl;
  try {
    cl = server::ParseCommandLine(std::vector<std::string>(argv + 1, argv + argc));
  } catch (const ConfigError& e) {
    std::cerr << "specwatch: " << e.what() << "\n";
    return 2;
  }
  if (cl.help) {
    std::cout << server::HelpText();
    return 0;
  }
  if (cl.print_defaults) {
    std::cout << server::ConfigText(server::ServiceOptions{});
    return 0;
  }
  const server::ServiceOptions& options = cl.options;
  server::InitialModel initial;
  if (!options.initial_model.empty()) {
    try {
      initial = server::LoadInitialModel(options);
    } catch (const ConfigError& e) {
      std::cerr << "specwatch: " << e.what() << "\n";
      return 2;
    }
  }
  if (cl.check_config) {
    std::cout << server::ConfigText(options) << "# configuration is valid\n";
    return 0;
  }

  auto log = spdlog::stderr_color_mt("specwatch");
  log->set_level(spdlog::level::from_str(options.log_level));
  log->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");

  // Frames are 0.1-1 MB: keep glibc from mmap-ing and unmapping every one of them.
  if (!stream::RetainHeapForLargeMessages()) log->warn("glibc refused the heap settings: frames will page-fault");

  // Signals are taken by one watcher thread; every other thread inherits the blocked mask. A shell that
  // started us in the background may have set them to "ignore", which sigwait would never see.
  std::signal(SIGINT, SIG_DFL);
  std::signal(SIGTERM, SIG_DFL);
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  // The flow graph's arena asks for ComputeThreads() workers; TBB counts the (non-working) main thread in
  // max_allowed_parallelism, hence + 1.
  tbb::global_control threads(tbb::global_control::max_allowed_parallelism,
                              static_cast<size_t>(server::ComputeThreads(options)) + 1);

  auto registry = std::make_shared<prometheus::Registry>();
  server::ServiceMetrics metrics(*registry);
  const server::SystemClock clock;
  std::unique_ptr<prometheus::Exposer> exposer;
  std::unique_ptr<server::Service> service;
  try {
    if (!options.metrics_address.empty()) {
      exposer = std::make_unique<prometheus::Exposer>(options.metrics_address, 2);
      exposer->RegisterCollectable(registry);
      log->info("metrics on http://{}/metrics", options.metrics_address);
    }
    service = std::make_unique<server::Service>(options, metrics, log, clock, initial);
  } catch (const std::exception& e) {
    log->error("cannot start: {}", e.what());
    return 2;
  }

  std::thread watcher([&] {
    int signal = 0;
    sigwait(&signals, &signal);
    if (signal != 0) log->info("signal {}: stopping", signal);
    service->Stop();
  });
  service->Run();
  // Run may return because of a shutdown command: wake the watcher so it can exit.
  pthread_kill(watcher.native_handle(), SIGTERM);
  watcher.join();
  log->flush();
  // The exposer's web server (civetweb) polls with a 2 s timeout while stopping: everything is published
  // and flushed, so leave it to the process exit instead of waiting for it.
  (void)exposer.release();
  return 0;
}
