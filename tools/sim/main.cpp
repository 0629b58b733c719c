// specwatch-sim: physics-based detector simulator. See tools/sim/README.md and --help.

#include "stream/detector_sender.hpp"
#include "stream/endpoint.hpp"
#include "stream/large_message_heap.hpp"
#include "tools/sim/frame_pump.hpp"
#include "tools/sim/sim_options.hpp"
#include "tools/sim/simulator.hpp"
#include "tools/sim/truth_writer.hpp"
#include "tools/sim/wire_messages.hpp"

#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

namespace {

using specwatch::sim::FrameInfo;

double UnixNow() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

/// Sends paced frames through the shared DetectorSender. A context shut down by the signal thread (a
/// second SIGINT, or a send blocked for 2 s after the first) makes sends fail with ETERM: the run ends.
class ZmqSink : public specwatch::sim::FrameSink {
 public:
  ZmqSink(const specwatch::sim::Simulator& sim, specwatch::stream::DetectorSender& sender) : sim_(sim), sender_(sender) {}
  bool Send(const FrameInfo& frame, double acquisition_time_s, std::span<const std::byte> payload) override {
    try {
      sender_.SendFrame(specwatch::sim::MakeFrameHeader(sim_, frame, acquisition_time_s), payload);
      return true;
    } catch (const zmq::error_t& e) {
      if (e.num() == ETERM) {
        closed_ = true;
        return false;
      }
      throw;
    }
  }
  bool Closed() const { return closed_; }

 private:
  const specwatch::sim::Simulator& sim_;
  specwatch::stream::DetectorSender& sender_;
  bool closed_ = false;
};

/// SIGINT/SIGTERM are blocked in every thread and taken here with sigtimedwait: the first asks for a clean
/// stop (SeriesEnd, summary, exit 0); a second one, or 2 s without the main thread finishing, shuts the
/// ZeroMQ context down so that a send blocked on a PUSH high-water mark returns.
class SignalWatcher {
 public:
  SignalWatcher(std::atomic<bool>& stop, zmq::context_t& ctx) : stop_(stop), ctx_(ctx), thread_([this] { Run(); }) {}
  ~SignalWatcher() {
    done_ = true;
    thread_.join();
  }

 private:
  void Run() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    int received = 0;
    bool shut = false;
    std::chrono::steady_clock::time_point first{};
    while (!done_) {
      timespec ts{0, 50'000'000};
      const int sig = sigtimedwait(&set, nullptr, &ts);
      const auto now = std::chrono::steady_clock::now();
      if (sig > 0) {
        if (received++ == 0) first = now;
        stop_ = true;
      }
      if (!shut && received > 0 && (received >= 2 || now - first > std::chrono::seconds(2))) {
        ctx_.shutdown();
        shut = true;
      }
    }
  }
  std::atomic<bool>& stop_;
  zmq::context_t& ctx_;
  std::atomic<bool> done_{false};
  std::thread thread_;
};

bool InterruptibleSleep(double seconds, const std::atomic<bool>& stop) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < until) {
    if (stop) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return !stop;
}

int Run(int argc, char** argv) {
  using namespace specwatch;
  std::vector<std::string> args(argv + 1, argv + argc);
  sim::SimOptions options;
  try {
    options = sim::ParseSimArgs(args);
  } catch (const sim::ConfigError& e) {
    std::fprintf(stderr, "specwatch-sim: %s\n", e.what());
    return 2;
  }
  if (options.help) {
    std::fputs(sim::SimUsage().c_str(), stdout);
    return 0;
  }
  std::vector<stream::Endpoint> endpoints;
  try {
    endpoints = stream::ParseEndpoints(options.endpoint, stream::Direction::kBind, "--endpoint");
  } catch (const std::invalid_argument& e) {
    std::fprintf(stderr, "specwatch-sim: %s\n", e.what());
    return 2;
  }

  // Signals go to the watcher thread only; every thread created from here on inherits the mask.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);  // precise sleep_until for pacing (default slack is 50 µs)
  // DetectorSender copies each payload into a fresh zmq::message_t (~1 MB for a 256-spectrum frame). With
  // glibc's defaults every such block is a new mmap: page faults and zeroing cost more than generating the
  // counts. Serve them from the heap instead, and keep freed memory for the next frame.
  if (!specwatch::stream::RetainHeapForLargeMessages()) std::fprintf(stderr, "specwatch-sim: heap settings refused\n");

  std::unique_ptr<sim::Simulator> simulator;
  try {
    simulator = std::make_unique<sim::Simulator>(options);
  } catch (const sim::ConfigError& e) {
    std::fprintf(stderr, "specwatch-sim: %s\n", e.what());
    return 2;
  }
  const sim::Simulator& s = *simulator;
  if (options.pregenerate) {
    const double need = static_cast<double>(s.PayloadBytes(options.FrameSpectra())) * static_cast<double>(s.FrameCount());
    const double have = static_cast<double>(sysconf(_SC_PHYS_PAGES)) * static_cast<double>(sysconf(_SC_PAGE_SIZE));
    if (need > 0.6 * have) {
      std::fprintf(stderr, "specwatch-sim: --pregenerate: the run needs %.1f GiB of payload, more than 60%% of memory\n",
                   need / (1u << 30));
      return 2;
    }
  }
  if (!options.truth_path.empty()) {
    std::vector<std::string> command_line(argv, argv + argc);
    try {
      sim::WriteTruthFile(s, command_line, options.truth_path);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "specwatch-sim: %s\n", e.what());
      return 1;
    }
  }

  zmq::context_t ctx(1);
  std::atomic<bool> stop{false};
  SignalWatcher watcher(stop, ctx);
  bool closed = false;
  sim::PumpStats stats;
  {
    zmq::socket_t socket(ctx, options.socket == sim::SocketKind::kPub ? zmq::socket_type::pub : zmq::socket_type::push);
    socket.set(zmq::sockopt::linger, 2000);
    if (options.send_hwm > 0) socket.set(zmq::sockopt::sndhwm, options.send_hwm);
    try {
      const auto attached = stream::Attach(socket, endpoints);
      for (size_t i = 0; i < attached.size() && i < endpoints.size(); ++i) {
        std::printf("specwatch-sim: %s %s\n", endpoints[i].direction == stream::Direction::kBind ? "bound" : "connected",
                    attached[i].c_str());
      }
    } catch (const zmq::error_t& e) {
      std::fprintf(stderr, "specwatch-sim: --endpoint: %s: %s\n", options.endpoint.c_str(), e.what());
      return 1;
    }
    std::printf("specwatch-sim: %s, %d channels, scan %ux%u, %u passes, %llu frames of %u spectra, rate %g/s, series %s\n",
                sim::ModalityName(options.modality), options.channels, options.scan_width, options.scan_height,
                options.passes, static_cast<unsigned long long>(s.FrameCount()), options.FrameSpectra(),
                options.rate_spectra_per_s, options.SeriesId().c_str());
    std::fflush(stdout);

    stream::DetectorSender sender(socket);
    ZmqSink sink(s, sender);
    try {
      if (InterruptibleSleep(options.start_delay_s, stop)) {
        if (options.send_series_start) sender.SendSeriesStart(sim::MakeSeriesStart(s, UnixNow()));
        sim::PumpOptions po;
        po.rate_spectra_per_s = options.rate_spectra_per_s;
        po.generator_threads = options.generator_threads;
        po.queue_frames = options.queue_frames;
        po.pregenerate = options.pregenerate;
        stats = sim::RunPump(s, sink, po, stop);
      } else {
        stats.interrupted = true;
      }
      closed = sink.Closed();
      if (!closed) sender.SendSeriesEnd(sim::MakeSeriesEnd(s, stats.frames, stats.spectra));
    } catch (const zmq::error_t& e) {
      if (e.num() != ETERM) throw;
      closed = true;
      stats.interrupted = true;
    }
  }

  std::printf(
      "specwatch-sim: %s%llu frames, %llu spectra in %.3f s, achieved %.1f spectra/s (target %s), max lag %.2f ms, "
      "%llu late frames, %llu generator waits, %llu saturated values%s%s\n",
      stats.interrupted ? "INTERRUPTED after " : "sent ", static_cast<unsigned long long>(stats.frames),
      static_cast<unsigned long long>(stats.spectra), stats.elapsed_s, stats.achieved_rate,
      options.rate_spectra_per_s > 0 ? std::to_string(static_cast<long long>(options.rate_spectra_per_s)).c_str() : "max",
      stats.max_lag_s * 1e3, static_cast<unsigned long long>(stats.late_frames),
      static_cast<unsigned long long>(stats.generator_waits), static_cast<unsigned long long>(stats.saturated_values),
      options.pregenerate ? (", pregenerated in " + std::to_string(stats.pregenerate_s).substr(0, 6) + " s").c_str() : "",
      closed ? " (transport shut down, no SeriesEnd)" : "");
  std::fflush(stdout);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return Run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "specwatch-sim: error: %s\n", e.what());
    return 1;
  }
}
