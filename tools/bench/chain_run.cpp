#include "tools/bench/chain_run.hpp"

#include "control.pb.h"
#include "results.pb.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <zmq.hpp>
#include <zmq_addon.hpp>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <regex>
#include <sstream>
#include <thread>
#include <unordered_set>

namespace specwatch::bench {
namespace {

std::atomic<bool> g_abort{false};

void Progress(const BenchOptions& o, const std::string& text) {
  if (o.verbose) std::fprintf(stderr, "specwatch-bench: %s\n", text.c_str());
}

double LoadAverage() {
  std::ifstream in("/proc/loadavg");
  double v = 0;
  in >> v;
  return v;
}

/// Busy CPU seconds of the whole machine so far (/proc/stat: everything but idle and iowait).
double MachineBusySeconds() {
  std::ifstream in("/proc/stat");
  std::string cpu;
  in >> cpu;
  double total_busy = 0, v = 0;
  for (int i = 0; i < 8 && (in >> v); ++i) {
    if (i != 3 && i != 4) total_busy += v;  // user nice system [idle iowait] irq softirq steal
  }
  return total_busy / static_cast<double>(sysconf(_SC_CLK_TCK));
}

double ProcessCpuSeconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         1e-6 * static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

Quantiles Summarise(std::vector<double> v) {
  Quantiles q;
  q.n = v.size();
  if (v.empty()) return q;
  std::sort(v.begin(), v.end());
  auto at = [&](double p) {  // nearest rank
    const size_t k = static_cast<size_t>(std::ceil(p * static_cast<double>(v.size())));
    return v[std::clamp<size_t>(k, 1, v.size()) - 1];
  };
  q.p50 = at(0.50);
  q.p99 = at(0.99);
  q.max = v.back();
  double sum = 0;
  for (double x : v) sum += x;
  q.mean = sum / static_cast<double>(v.size());
  return q;
}

// ---------------------------------------------------------------------------------------------------------
// The bench's subscriber: its own thread and socket; the run thread reads counters and, at the end, the
// collected samples.

struct SubscriberStats {
  uint64_t messages = 0, spectra = 0, missing = 0, bad_payload = 0, restarts = 0, passthrough = 0;
  uint64_t model_missing = 0;  ///< scores-only messages whose model version's snapshot had not arrived
  uint64_t first_spectra = 0;
  double first_recv = 0, last_recv = 0;  // Unix
  double last_latency = 0;
  bool series_end = false;
  uint64_t status_messages = 0;
  std::vector<double> latency, in_service, transport;
  std::vector<double> acquisition;           // Unix, per message
  std::vector<uint64_t> frame, spectra_of;  // kept for --samples
};

class Subscriber {
 public:
  Subscriber(zmq::context_t& ctx, const std::string& endpoint) : socket_(ctx, zmq::socket_type::sub) {
    socket_.set(zmq::sockopt::rcvhwm, 10000);  // as deep as the service's send high-water mark
    socket_.set(zmq::sockopt::linger, 0);
    for (const char* topic : {"denoised", "snapshot", "status"}) socket_.set(zmq::sockopt::subscribe, topic);
    socket_.connect(endpoint);
    thread_ = std::thread([this] { Loop(); });
  }
  ~Subscriber() { Stop(); }

  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  /// Status and snapshot messages so far: any of them proves the subscription reached the service.
  uint64_t JoinMessages() const { return any_messages_.load(); }
  uint64_t DenoisedMessages() const { return denoised_messages_.load(); }
  bool SeriesEndSeen() const { return series_end_.load(); }
  double LastMessageSteady() const { return last_steady_.load(); }
  /// After Stop().
  SubscriberStats& stats() { return stats_; }

 private:
  void Loop() {
    zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
    std::vector<zmq::message_t> parts;
    wire::Envelope env;
    uint64_t last_sequence = 0, epoch = 0;
    while (!stop_) {
      if (zmq::poll(&item, 1, std::chrono::milliseconds(50)) <= 0) continue;
      while (true) {  // drain what is there before polling again
        parts.clear();
        if (!zmq::recv_multipart(socket_, std::back_inserter(parts), zmq::recv_flags::dontwait)) break;
        const double now = UnixNow();
        last_steady_ = SteadyNow();
        if (parts.size() < 2 || !env.ParseFromArray(parts[1].data(), static_cast<int>(parts[1].size()))) {
          ++stats_.bad_payload;
          continue;
        }
        const std::string_view topic(static_cast<const char*>(parts[0].data()), parts[0].size());
        if (topic == "status") {
          ++stats_.status_messages;
          ++any_messages_;
          continue;
        }
        if (topic == "snapshot") {
          ++any_messages_;
          snapshot_versions_.insert(env.snapshot().model_version());
          if (env.snapshot().reason() == "series_end") {
            stats_.series_end = true;
            series_end_ = true;
          }
          continue;
        }
        if (topic != "denoised") continue;
        const auto& d = env.denoised();
        if (epoch != 0 && env.publisher_epoch() != epoch) {
          ++stats_.restarts;
          last_sequence = 0;
        }
        epoch = env.publisher_epoch();
        // The subscription was in place before the first frame was sent: the first sequence must be 1.
        if (env.sequence() > last_sequence + 1) stats_.missing += env.sequence() - last_sequence - 1;
        last_sequence = std::max(last_sequence, env.sequence());
        if (d.spectra_omitted()) {
          // Scores only: the spectra are rebuilt from the snapshot of this version, which must have come first.
          if (parts.size() != 2 || size_t(d.scores_size()) != size_t{d.spectrum_count()} * d.rank()) {
            ++stats_.bad_payload;
          }
          if (!snapshot_versions_.contains(d.model_version())) ++stats_.model_missing;
        } else {
          const size_t want = size_t{d.spectrum_count()} * d.channel_count() * sizeof(float);
          if (parts.size() != 3 || parts[2].size() != want) ++stats_.bad_payload;
        }
        if (d.rank() == 0) ++stats_.passthrough;
        if (stats_.messages == 0) {
          stats_.first_recv = now;
          stats_.first_spectra = d.spectrum_count();
        }
        stats_.last_recv = now;
        ++stats_.messages;
        stats_.spectra += d.spectrum_count();
        stats_.latency.push_back(now - d.acquisition_time_s());
        stats_.last_latency = stats_.latency.back();
        stats_.in_service.push_back(env.publish_time_s() - d.acquisition_time_s());
        stats_.transport.push_back(now - env.publish_time_s());
        stats_.acquisition.push_back(d.acquisition_time_s());
        stats_.frame.push_back(d.frame_number());
        stats_.spectra_of.push_back(d.spectrum_count());
        ++denoised_messages_;
      }
    }
  }

  zmq::socket_t socket_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> any_messages_{0}, denoised_messages_{0};
  std::atomic<bool> series_end_{false};
  std::atomic<double> last_steady_{0};
  SubscriberStats stats_;  // subscriber thread until Stop()
  std::unordered_set<uint64_t> snapshot_versions_;  // subscriber thread
};

// ---------------------------------------------------------------------------------------------------------
// Control client: REQ with a timeout; a REQ socket that timed out is replaced (it is stuck in "expect reply").

class ControlClient {
 public:
  ControlClient(zmq::context_t& ctx, std::string endpoint) : ctx_(ctx), endpoint_(std::move(endpoint)) { Reset(); }

  std::optional<wire::ControlReply> Request(wire::Command command, double timeout_s) {
    wire::ControlRequest req;
    req.set_command(command);
    std::string bytes;
    req.SerializeToString(&bytes);
    socket_->send(zmq::buffer(bytes), zmq::send_flags::none);
    zmq::pollitem_t item{socket_->handle(), 0, ZMQ_POLLIN, 0};
    if (zmq::poll(&item, 1, std::chrono::milliseconds(static_cast<long>(timeout_s * 1000))) <= 0) {
      Reset();
      return std::nullopt;
    }
    zmq::message_t reply;
    if (!socket_->recv(reply, zmq::recv_flags::dontwait)) {
      Reset();
      return std::nullopt;
    }
    wire::ControlReply r;
    if (!r.ParseFromArray(reply.data(), static_cast<int>(reply.size()))) return std::nullopt;
    return r;
  }

 private:
  void Reset() {
    socket_ = std::make_unique<zmq::socket_t>(ctx_, zmq::socket_type::req);
    socket_->set(zmq::sockopt::linger, 0);
    socket_->connect(endpoint_);
  }
  zmq::context_t& ctx_;
  std::string endpoint_;
  std::unique_ptr<zmq::socket_t> socket_;
};

// ---------------------------------------------------------------------------------------------------------
// Prometheus scrape: a plain HTTP/1.0 GET, then the few series the report uses.

std::string HttpGet(int port, const std::string& path, double timeout_s) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return {};
  timeval tv{static_cast<time_t>(timeout_s), static_cast<suseconds_t>((timeout_s - std::floor(timeout_s)) * 1e6)};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  std::string body;
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
    const std::string req = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if (send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size())) {
      char buf[65536];
      ssize_t n;
      while ((n = recv(fd, buf, sizeof buf, 0)) > 0) body.append(buf, static_cast<size_t>(n));
    }
  }
  close(fd);
  const auto header_end = body.find("\r\n\r\n");
  return header_end == std::string::npos ? std::string{} : body.substr(header_end + 4);
}

struct Histogram {
  std::vector<std::pair<double, double>> buckets;  // (le, cumulative count)
  double sum = 0, count = 0;
};

double HistogramQuantile(const Histogram& h, double q) {
  if (h.count <= 0 || h.buckets.empty()) return 0;
  const double rank = q * h.count;
  double prev_le = 0, prev_count = 0;
  for (const auto& [le, cum] : h.buckets) {
    if (cum >= rank) {
      if (std::isinf(le)) return prev_le;  // beyond the last finite bucket: its bound is all we know
      const double in_bucket = cum - prev_count;
      return in_bucket <= 0 ? le : prev_le + (le - prev_le) * (rank - prev_count) / in_bucket;
    }
    prev_le = le;
    prev_count = cum;
  }
  return prev_le;
}

void ParseMetrics(const std::string& text, RunResult& r) {
  std::map<std::string, Histogram> hist;
  std::istringstream in(text);
  std::string line;
  const std::regex stage_re(R"re(stage="([a-z_]+)")re");
  const std::regex le_re(R"re(le="([^"]+)")re");
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    const auto space = line.rfind(' ');
    if (space == std::string::npos) continue;
    const std::string name_labels = line.substr(0, space);
    double value = 0;
    try {
      value = std::stod(line.substr(space + 1));
    } catch (...) {
      continue;
    }
    if (name_labels == "specwatch_model_spectra_total") r.model_spectra = value;
    if (name_labels == "specwatch_model_spectra_skipped_total") r.model_spectra_skipped = value;
    if (name_labels.rfind("specwatch_stage_latency_seconds", 0) != 0) continue;
    std::smatch m;
    if (!std::regex_search(name_labels, m, stage_re)) continue;
    Histogram& h = hist[m[1]];
    if (name_labels.rfind("specwatch_stage_latency_seconds_bucket", 0) == 0) {
      std::smatch le;
      if (!std::regex_search(name_labels, le, le_re)) continue;
      const double bound = le[1] == "+Inf" ? INFINITY : std::stod(le[1]);
      h.buckets.emplace_back(bound, value);
    } else if (name_labels.rfind("specwatch_stage_latency_seconds_sum", 0) == 0) {
      h.sum = value;
    } else if (name_labels.rfind("specwatch_stage_latency_seconds_count", 0) == 0) {
      h.count = value;
    }
  }
  for (auto& [stage, h] : hist) {
    std::sort(h.buckets.begin(), h.buckets.end());
    StageLatency s;
    s.count = static_cast<uint64_t>(h.count);
    s.sum_s = h.sum;
    s.mean_s = h.count > 0 ? h.sum / h.count : 0;
    s.p50_s = HistogramQuantile(h, 0.50);
    s.p99_s = HistogramQuantile(h, 0.99);
    r.stages[stage] = s;
  }
}

// ---------------------------------------------------------------------------------------------------------

/// "specwatch-sim: sent F frames, S spectra in T s, achieved R spectra/s (target X), max lag L ms,
///  N late frames, W generator waits, ..." (or "INTERRUPTED after F frames, ...").
void ParseSimSummary(const std::string& log_path, RunResult& r) {
  std::ifstream in(log_path);
  std::string line;
  const std::regex re(
      R"re((sent|INTERRUPTED after) (\d+) frames, (\d+) spectra in ([0-9.eE+-]+) s, achieved ([0-9.eE+-]+) spectra/s.*max lag ([0-9.eE+-]+) ms, (\d+) late frames, (\d+) generator waits)re");
  while (std::getline(in, line)) {
    std::smatch m;
    if (!std::regex_search(line, m, re)) continue;
    r.sim_summary_found = true;
    r.sim_interrupted = m[1] != "sent";
    r.sim_frames = std::stoull(m[2]);
    r.sim_spectra = std::stoull(m[3]);
    r.sim_elapsed_s = std::stod(m[4]);
    r.sim_rate = std::stod(m[5]);
    r.sim_max_lag_ms = std::stod(m[6]);
    r.sim_late_frames = std::stoull(m[7]);
    r.sim_generator_waits = std::stoull(m[8]);
  }
}

void FillStatus(const wire::Status& s, RunResult& r) {
  r.frames_received = s.frames_received();
  r.spectra_received = s.spectra_received();
  r.spectra_published = s.spectra_published();
  r.spectra_rejected = s.spectra_rejected();
  r.frames_rejected = s.frames_rejected();
  r.sequence_gaps = s.sequence_gaps();
  r.rank = s.rank();
  r.model_version = s.model_version();
  r.spectra_in_model = s.spectra_in_model();
  for (const auto& t : s.published()) {
    if (t.topic() == "denoised") r.denoised_messages_published = t.published();
  }
}

std::string Fmt(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.10g", v);
  return buf;
}

bool Sleep(double s) {
  const double until = SteadyNow() + s;
  while (SteadyNow() < until) {
    if (g_abort) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

}  // namespace

void RequestAbort() { g_abort = true; }
bool AbortRequested() { return g_abort.load(); }

RunResult RunChain(const BenchOptions& o, const RunSpec& spec, const std::string& bin_dir,
                   const std::string& log_dir, int run_number) {
  RunResult r;
  r.spec = spec;
  r.log_dir = log_dir;
  r.load_before = LoadAverage();
  const std::string tag = spec.scenario + "-" + std::to_string(static_cast<long long>(spec.rate)) + "-" +
                          std::to_string(run_number);
  const std::string service_log = log_dir + "/" + tag + ".service.log";
  const std::string sim_log = log_dir + "/" + tag + ".sim.log";

  const auto ports = FreeLoopbackPorts(4);
  // ipc: socket files named after this process, the run and the (free) port numbers, so runs side by side
  // never collide.
  const std::string host = o.transport == "ipc" ? "ipc:///tmp/specwatch-bench-" + std::to_string(getpid()) + "-" +
                                                      std::to_string(run_number) + "-"
                                                : std::string("tcp://127.0.0.1:");
  const std::string frames_at = host + std::to_string(ports[0]);
  const std::string publish_at = host + std::to_string(ports[1]);
  const std::string control_at = host + std::to_string(ports[2]);
  // ZeroMQ leaves ipc socket files behind when a process exits without closing them: remove ours.
  struct RemoveIpcFiles {
    std::vector<std::string> paths;
    ~RemoveIpcFiles() {
      for (const auto& p : paths) ::unlink(p.c_str());
    }
  } remove_ipc_files;
  if (o.transport == "ipc") {
    for (const auto* e : {&frames_at, &publish_at, &control_at}) remove_ipc_files.paths.push_back(e->substr(6));
  }
  const int metrics_port = ports[3];

  std::vector<std::string> service_argv = {bin_dir + "/specwatch",
                                           "--frames", ">" + frames_at,
                                           "--publish", "@" + publish_at,
                                           "--control", "@" + control_at,
                                           "--metrics", "127.0.0.1:" + std::to_string(metrics_port)};
  if (o.socket == "push") service_argv.insert(service_argv.end(), {"--frames-socket", "pull"});
  if (o.rank > 0) service_argv.insert(service_argv.end(), {"--rank", std::to_string(o.rank)});
  service_argv.insert(service_argv.end(), {"--denoised-payload", o.denoised_payload});
  if (o.service_threads >= 0) service_argv.insert(service_argv.end(), {"--threads", std::to_string(o.service_threads)});
  service_argv.insert(service_argv.end(), o.service_args.begin(), o.service_args.end());

  const uint64_t per_pass = uint64_t{o.scan_width} * o.scan_height;
  const auto wanted = static_cast<uint64_t>(std::ceil(spec.rate * spec.seconds));
  const uint64_t passes = std::max<uint64_t>(1, (wanted + per_pass - 1) / per_pass);
  r.requested_spectra = passes * per_pass;
  std::vector<std::string> sim_argv = {bin_dir + "/specwatch-sim",
                                       "--modality", o.modality,
                                       "--channels", std::to_string(o.channels),
                                       "--scan", std::to_string(o.scan_width) + "x" + std::to_string(o.scan_height),
                                       "--passes", std::to_string(passes),
                                       "--frame-spectra", std::to_string(o.frame_spectra),
                                       "--rate", Fmt(spec.rate),
                                       "--endpoint", "@" + frames_at,
                                       "--socket", o.socket,
                                       "--seed", std::to_string(run_number + 1),
                                       "--threads", std::to_string(o.sim_threads),
                                       "--start-delay-s", Fmt(o.start_delay_s)};
  {
    const double payload_bytes = static_cast<double>(r.requested_spectra) * o.channels * 2.0;  // uint16
    const double memory = static_cast<double>(sysconf(_SC_PHYS_PAGES)) * static_cast<double>(sysconf(_SC_PAGE_SIZE));
    r.pregenerated = o.sim_pregenerate == "on" || (o.sim_pregenerate == "auto" && payload_bytes <= 0.25 * memory);
    if (r.pregenerated) sim_argv.push_back("--pregenerate");
  }
  sim_argv.insert(sim_argv.end(), o.sim_args.begin(), o.sim_args.end());

  auto fail = [&](const std::string& why, const ChildProcess* p) {
    r.error = why;
    if (p) r.error += "\n  " + p->name() + " log (" + p->log_path() + "):\n" + TailOfFile(p->log_path(), 15);
    return r;
  };

  zmq::context_t ctx(1);
  std::unique_ptr<ChildProcess> service, sim;
  std::unique_ptr<Subscriber> sub;
  try {
    // 1. The service, and its control socket answering.
    service = std::make_unique<ChildProcess>("specwatch", service_argv, service_log, o.service_env);
    r.service_command = service->CommandLine();
    Progress(o, "[" + tag + "] " + r.service_command);
    ControlClient control(ctx, control_at);
    bool answered = false;
    for (const double deadline = SteadyNow() + 20; SteadyNow() < deadline && !g_abort;) {
      if (!service->Running()) return fail("specwatch exited during start-up", service.get());
      if (control.Request(wire::COMMAND_STATUS, 0.5)) {
        answered = true;
        break;
      }
    }
    if (!answered) return fail("specwatch's control socket did not answer STATUS within 20 s", service.get());

    // 2. The subscriber, proven joined by a message from the service: the periodic status (every second by
    // default), or a snapshot asked for over the control socket if none came (status_period_s: 0).
    sub = std::make_unique<Subscriber>(ctx, publish_at);
    double next_snapshot_request = SteadyNow() + 2.0;
    for (const double deadline = SteadyNow() + 10; sub->JoinMessages() == 0;) {
      if (SteadyNow() > deadline || g_abort) return fail("no message on the publish socket within 10 s", service.get());
      if (SteadyNow() > next_snapshot_request) {
        control.Request(wire::COMMAND_SNAPSHOT, 1.0);
        next_snapshot_request = SteadyNow() + 1.0;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }

    // 3. The simulator. CPU figures are taken over a window from the first denoised message (so the sim's
    // start delay and pregeneration are not in it) to the end of the drain.
    struct Sample {
      double wall = 0, service_cpu = 0, sim_cpu = 0, bench_cpu = 0, machine_busy = 0;
    };
    auto take_sample = [&](bool sim_running) {
      Sample x;
      x.wall = SteadyNow();
      if (auto p = ReadProcStats(service->pid())) x.service_cpu = p->cpu_s;
      if (sim_running) {
        if (auto p = ReadProcStats(sim->pid())) x.sim_cpu = p->cpu_s;
      }
      x.bench_cpu = ProcessCpuSeconds();
      x.machine_busy = MachineBusySeconds();
      return x;
    };
    sim = std::make_unique<ChildProcess>("specwatch-sim", sim_argv, sim_log);
    r.sim_command = sim->CommandLine();
    Progress(o, "[" + tag + "] " + r.sim_command);
    std::optional<Sample> window_start;
    const Sample at_sim_start = take_sample(true);
    const double sim_deadline = SteadyNow() + o.start_delay_s + 3.0 * static_cast<double>(r.requested_spectra) / spec.rate +
                                (r.pregenerated ? 20e-6 * static_cast<double>(r.requested_spectra) : 0.0) + 60;
    while (sim->Running()) {
      if (g_abort || SteadyNow() > sim_deadline) {
        sim->Stop(SIGINT, 2.0, 3.0);
        return fail(g_abort ? "interrupted" : "specwatch-sim did not finish in time", sim.get());
      }
      if (!service->Running()) return fail("specwatch exited while frames were being sent", service.get());
      if (!window_start && sub->DenoisedMessages() > 0) window_start = take_sample(true);
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (!window_start) window_start = at_sim_start;
    r.sim_exit_code = sim->exit().exit_code;
    r.sim_cpu_s = sim->exit().cpu_s;
    r.sim_stopped_clean = sim->exit().exit_code == 0;
    ParseSimSummary(sim_log, r);
    if (!r.sim_summary_found || r.sim_exit_code != 0) {
      return fail("specwatch-sim exited " + std::to_string(r.sim_exit_code) + " without its summary line", sim.get());
    }
    Progress(o, "[" + tag + "] sim done: " + std::to_string(r.sim_spectra) + " spectra, " + Fmt(r.sim_rate) + " /s");

    // 4. Drain: the "series_end" snapshot comes after every denoised message of the series. If the SeriesEnd
    // message itself was lost (PUB drops), wait until the counters stop moving.
    std::optional<wire::Status> last;
    double stable_since = SteadyNow();
    const double drain_deadline = SteadyNow() + o.drain_timeout_s;
    while (SteadyNow() < drain_deadline && !g_abort) {
      if (sub->SeriesEndSeen()) break;
      auto reply = control.Request(wire::COMMAND_STATUS, 1.0);
      if (reply) {
        const auto& s = reply->status();
        const bool moved = !last || s.spectra_received() != last->spectra_received() ||
                           s.spectra_published() != last->spectra_published();
        if (moved) stable_since = SteadyNow();
        last = s;
        if (s.frames_in_flight() == 0 && SteadyNow() - stable_since > 2.0) break;
      }
      Sleep(0.1);
    }
    auto final_reply = control.Request(wire::COMMAND_STATUS, 2.0);
    if (!final_reply) return fail("specwatch did not answer the final STATUS", service.get());
    FillStatus(final_reply->status(), r);
    // The subscriber may still be reading the last messages out of its socket.
    for (const double deadline = SteadyNow() + 5; SteadyNow() < deadline && !g_abort;) {
      if (sub->DenoisedMessages() >= r.denoised_messages_published) break;
      if (SteadyNow() - sub->LastMessageSteady() > 1.0 && sub->LastMessageSteady() > 0) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    const Sample end = take_sample(false);
    const double window = std::max(1e-9, end.wall - window_start->wall);
    r.bench_cpu_s = end.bench_cpu - window_start->bench_cpu;
    r.sim_cpu_window_s = std::max(0.0, r.sim_cpu_s - window_start->sim_cpu);
    if (const auto stats_end = ReadProcStats(service->pid())) {
      r.service_hwm_MiB = stats_end->vm_hwm_MiB;
      r.service_rss_MiB = stats_end->vm_rss_MiB;
      r.service_threads = stats_end->threads;
    }
    r.service_thread_cpu = ReadThreadCpu(service->pid());
    // Per spectrum: the whole run from the sim's start (nothing else happens in the service meanwhile).
    r.service_cpu_s = end.service_cpu - at_sim_start.service_cpu;
    if (r.sim_spectra > 0) r.service_cpu_us_per_spectrum = 1e6 * r.service_cpu_s / static_cast<double>(r.sim_spectra);
    const double service_window = end.service_cpu - window_start->service_cpu;
    r.service_cores = service_window / window;
    r.sim_cores = r.sim_cpu_window_s / window;
    r.bench_cores = r.bench_cpu_s / window;
    r.other_cores =
        std::max(0.0, end.machine_busy - window_start->machine_busy - service_window - r.sim_cpu_window_s - r.bench_cpu_s) /
        window;
    ParseMetrics(HttpGet(metrics_port, "/metrics", 3.0), r);

    // 5. Stop the service: SIGINT, exit 0 within 2 s.
    const StopOutcome stop = service->Stop(SIGINT, 2.0, 8.0);
    r.service_stop_s = stop.seconds;
    r.service_exit_code = service->exit().exit_code;
    r.service_stopped_clean = stop.requested && stop.within_grace && service->exit().exit_code == 0;
    sub->Stop();

    auto& st = sub->stats();
    r.sub_messages = st.messages;
    r.sub_spectra = st.spectra;
    r.sub_missing = st.missing + (r.denoised_messages_published > st.messages + st.missing
                                      ? r.denoised_messages_published - st.messages - st.missing
                                      : 0);  // lost at the tail: never followed by a later sequence number
    r.sub_bad_payload = st.bad_payload + st.model_missing;  // a message the client could not rebuild is bad
    r.sub_restarts = st.restarts;
    r.sub_passthrough_messages = st.passthrough;
    r.series_end_seen = st.series_end;
    if (st.messages >= 2 && st.last_recv > st.first_recv) {
      r.publish_rate = static_cast<double>(st.spectra - st.first_spectra) / (st.last_recv - st.first_recv);
    }
    r.last_latency_s = st.last_latency;
    if (!o.samples_path.empty()) {
      std::ofstream csv(o.samples_path, std::ios::app);
      csv.precision(17);
      for (size_t i = 0; i < st.latency.size(); ++i) {
        csv << run_number << ',' << spec.scenario << ',' << spec.rate << ',' << st.frame[i] << ','
            << st.spectra_of[i] << ',' << st.latency[i] << ',' << st.in_service[i] << ',' << st.transport[i]
            << '\n';
      }
    }
    {
      constexpr double kWarmup_s = 1.0;
      std::vector<double> steady;
      const double first_acquisition =
          st.acquisition.empty() ? 0.0 : *std::min_element(st.acquisition.begin(), st.acquisition.end());
      for (size_t i = 0; i < st.latency.size(); ++i) {
        if (st.acquisition[i] >= first_acquisition + kWarmup_s) steady.push_back(st.latency[i]);
      }
      r.latency_steady = Summarise(std::move(steady));
    }
    r.latency = Summarise(std::move(st.latency));
    r.in_service = Summarise(std::move(st.in_service));
    r.transport = Summarise(std::move(st.transport));
  } catch (const std::exception& e) {
    return fail(std::string("error: ") + e.what(), service.get());
  }
  r.load_after = LoadAverage();
  r.completed = true;
  r.zero_loss = r.sequence_gaps == 0 && r.spectra_rejected == 0 && r.frames_rejected == 0 &&
                r.sub_missing == 0 && r.sub_bad_payload == 0 && r.sub_restarts == 0 && !r.sim_interrupted &&
                r.sim_spectra == r.requested_spectra && r.spectra_received == r.sim_spectra &&
                r.spectra_published == r.sim_spectra && r.sub_spectra == r.sim_spectra;
  r.rate_met = r.sim_rate >= 0.97 * spec.rate;
  r.kept_up = r.publish_rate >= 0.97 * r.sim_rate;
  r.latency_bounded = r.latency_steady.n > 0 && r.latency_steady.p99 * 1e3 < o.max_p99_ms;
  return r;
}

}  // namespace specwatch::bench
