#include "tools/bench/report.hpp"

#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <thread>

namespace specwatch::bench {
namespace {

std::string Num(double v, int precision) {
  if (!std::isfinite(v)) return "null";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", precision, v);
  return buf;
}

std::string JsonString(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double Ms(double s) { return 1e3 * s; }
double Us(double s) { return 1e6 * s; }

const RunResult* FirstCompleted(const std::vector<RunResult>& runs) {
  for (const auto& r : runs) {
    if (r.completed) return &r;
  }
  return nullptr;
}

/// Medians over completed runs; a boolean is true only if it held in every completed run.
std::vector<Metric> Medians(const std::vector<RunResult>& runs) {
  std::vector<std::vector<Metric>> all;
  for (const auto& r : runs) {
    if (r.completed) all.push_back(RunMetrics(r));
  }
  if (all.empty()) return {};
  std::vector<Metric> out = all.front();
  for (size_t i = 0; i < out.size(); ++i) {
    std::vector<double> v;
    for (const auto& m : all) v.push_back(m[i].value);
    if (out[i].is_bool) {
      out[i].value = std::all_of(v.begin(), v.end(), [](double x) { return x != 0; }) ? 1 : 0;
    } else {
      out[i].value = Median(v);
    }
  }
  return out;
}

std::string Cell(const Metric& m) { return m.is_bool ? (m.value != 0 ? "yes" : "NO") : Num(m.value, m.precision); }

std::string Pad(const std::string& s, size_t w, bool right) {
  if (s.size() >= w) return s;
  return right ? std::string(w - s.size(), ' ') + s : s + std::string(w - s.size(), ' ');
}

std::string Transport(const BenchOptions& o) {
  return std::string(o.socket == "pub" ? "PUB/SUB (sim PUB -> service SUB; drops at high-water marks)"
                                       : "PUSH/PULL (sim PUSH -> service PULL; backpressure)") +
         " over " + o.transport;
}

}  // namespace

std::vector<Metric> RunMetrics(const RunResult& r) {
  auto stage = [&](const char* name) {
    auto it = r.stages.find(name);
    return it == r.stages.end() ? StageLatency{} : it->second;
  };
  auto stage2 = [&](const char* name, const char* old_name) {
    return r.stages.count(name) ? stage(name) : stage(old_name);
  };
  const double sent = static_cast<double>(r.sim_spectra);
  std::vector<Metric> m = {
      {"rate_requested", "requested rate (spectra/s)", r.spec.rate, 0},
      {"sim_rate", "sim input rate achieved (spectra/s)", r.sim_rate, 0},
      {"publish_rate", "service publish rate, at bench (spectra/s)", r.publish_rate, 0},
      {"spectra_sent", "spectra sent by sim", sent, 0},
      {"spectra_received", "spectra received by service", static_cast<double>(r.spectra_received), 0},
      {"spectra_published", "spectra published by service", static_cast<double>(r.spectra_published), 0},
      {"spectra_rejected", "spectra rejected by service", static_cast<double>(r.spectra_rejected), 0},
      {"sequence_gaps", "frames missing at service (gaps)", static_cast<double>(r.sequence_gaps), 0},
      {"bench_missing_messages", "denoised msgs missing at bench", static_cast<double>(r.sub_missing), 0},
      {"bench_spectra", "spectra received by bench", static_cast<double>(r.sub_spectra), 0},
      {"zero_loss", "zero loss", r.zero_loss ? 1.0 : 0.0, 0, true},
      {"sustained", "sustained (loss 0, rate met, kept up, p99)", r.Sustained() ? 1.0 : 0.0, 0, true},
      {"latency_p50_ms", "latency p50 (ms)", Ms(r.latency.p50), 2},
      {"latency_p99_ms", "latency p99 (ms)", Ms(r.latency.p99), 2},
      {"latency_max_ms", "latency max (ms)", Ms(r.latency.max), 2},
      {"latency_mean_ms", "latency mean (ms)", Ms(r.latency.mean), 2},
      {"latency_steady_p50_ms", "  after the first 1 s: p50 (ms)", Ms(r.latency_steady.p50), 2},
      {"latency_steady_p99_ms", "  after the first 1 s: p99 (ms)", Ms(r.latency_steady.p99), 2},
      {"latency_steady_max_ms", "  after the first 1 s: max (ms)", Ms(r.latency_steady.max), 2},
      {"last_message_latency_ms", "latency of last message (ms)", Ms(r.last_latency_s), 2},
      {"in_service_p50_ms", "  acquisition->publish p50 (ms)", Ms(r.in_service.p50), 2},
      {"in_service_p99_ms", "  acquisition->publish p99 (ms)", Ms(r.in_service.p99), 2},
      {"transport_p50_ms", "  publish->bench receive p50 (ms)", Ms(r.transport.p50), 2},
      {"transport_p99_ms", "  publish->bench receive p99 (ms)", Ms(r.transport.p99), 2},
      {"sim_pregenerated", "sim pregenerated frames", r.pregenerated ? 1.0 : 0.0, 0, true},
      {"sim_max_lag_ms", "sim max send lag (ms)", r.sim_max_lag_ms, 2},
      {"sim_late_frames", "sim late frames (>1 ms)", static_cast<double>(r.sim_late_frames), 0},
      {"service_peak_rss_MiB", "service peak RSS, VmHWM (MiB)", r.service_hwm_MiB, 1},
      {"service_rss_end_MiB", "service RSS at end (MiB)", r.service_rss_MiB, 1},
      {"service_cpu_us_per_spectrum", "service CPU per spectrum (us)", r.service_cpu_us_per_spectrum, 2},
      {"sim_cpu_us_per_spectrum", "sim CPU per spectrum, incl. generation (us)", sent > 0 ? 1e6 * r.sim_cpu_s / sent : 0, 2},
      {"service_cores", "cores busy while streaming: service", r.service_cores, 2},
      {"sim_cores", "  sim (sending)", r.sim_cores, 2},
      {"bench_cores", "  bench (receiving)", r.bench_cores, 2},
      {"other_cores", "  other processes on the machine", r.other_cores, 2},
      {"stage_decode_mean_us", "stage decode mean (us/frame)", Us(stage("decode").mean_s), 1},
      // score and learn were called denoise and model_update before 2026-12-07 (read both, for side-by-side runs).
      {"stage_denoise_mean_us", "stage score mean (us/frame)", Us(stage2("score", "denoise").mean_s), 1},
      {"stage_denoise_p99_us", "stage score p99 (us/frame)", Us(stage2("score", "denoise").p99_s), 1},
      {"stage_session_mean_us", "stage session mean (us/frame)", Us(stage("session").mean_s), 1},
      {"stage_model_update_mean_us", "stage learn mean (us/frame)", Us(stage2("learn", "model_update").mean_s), 1},
      {"stage_encode_mean_us", "stage encode mean (us/item)", Us(stage("encode").mean_s), 1},
      {"stage_publish_mean_us", "stage publish mean (us/msg)", Us(stage("publish").mean_s), 1},
      {"stage_end_to_end_p50_ms", "stage end_to_end p50 (ms)", Ms(stage("end_to_end").p50_s), 2},
      {"stage_end_to_end_p99_ms", "stage end_to_end p99 (ms)", Ms(stage("end_to_end").p99_s), 2},
      {"model_learnt_fraction", "fraction of spectra learnt (model)", sent > 0 ? r.model_spectra / sent : 0, 3},
      {"service_stop_s", "service stop after SIGINT (s)", r.service_stop_s, 3},
      {"clean_stop", "service exit 0 within 2 s of SIGINT", r.service_stopped_clean ? 1.0 : 0.0, 0, true},
      {"load_before", "machine load average before", r.load_before, 2},
  };
  return m;
}

MachineInfo ReadMachineInfo() {
  MachineInfo m;
  m.cores = std::thread::hardware_concurrency();
  std::ifstream cpu("/proc/cpuinfo");
  std::string line;
  while (std::getline(cpu, line)) {
    if (line.rfind("model name", 0) == 0) {
      m.cpu_model = line.substr(line.find(':') + 2);
      break;
    }
  }
  std::ifstream mem("/proc/meminfo");
  while (std::getline(mem, line)) {
    if (line.rfind("MemTotal:", 0) == 0) m.mem_GiB = std::stod(line.substr(9)) / (1024.0 * 1024.0);
  }
  utsname u{};
  if (uname(&u) == 0) {
    m.kernel = std::string(u.sysname) + " " + u.release;
    m.hostname = u.nodename;
  }
  std::ifstream load("/proc/loadavg");
  load >> m.load_at_start;
  return m;
}

std::string TextReport(const BenchOptions& o, const MachineInfo& m, const std::vector<ScenarioReport>& scenarios,
                       const FindMaxReport& find_max) {
  std::ostringstream os;
  os << "specwatch-bench: " << o.channels << " channels, " << o.frame_spectra << " spectra/frame, scan "
     << o.scan_width << "x" << o.scan_height << ", " << o.modality << ", transport " << Transport(o)
     << ", denoised payload " << o.denoised_payload << "\n";
  os << "machine: " << m.cpu_model << ", " << m.cores << " cores, " << Num(m.mem_GiB, 1) << " GiB, " << m.kernel
     << ", load average at start " << Num(m.load_at_start, 2) << "\n";
  os << "latency = bench receive time - DenoisedBatch.acquisition_time_s (the sim's scheduled send time of the "
        "frame); it includes the sim's send lag, the transport and the bench's own receive.\n";
  for (const auto& sc : scenarios) {
    os << "\n== " << sc.spec.scenario << ": " << Num(sc.spec.rate, 0) << " spectra/s for " << Num(sc.spec.seconds, 1)
       << " s, " << sc.runs.size() << (sc.runs.size() == 1 ? " run" : " runs") << " ==\n";
    if (const RunResult* first = FirstCompleted(sc.runs)) {
      os << "service: " << first->service_command << "\nsim:     " << first->sim_command << "\n";
    }
    const auto med = Medians(sc.runs);
    std::vector<std::vector<Metric>> per_run;
    for (const auto& r : sc.runs) per_run.push_back(r.completed ? RunMetrics(r) : std::vector<Metric>{});
    size_t label_w = 0;
    for (const auto& x : med) label_w = std::max(label_w, x.label.size());
    label_w += 2;
    const size_t col_w = 12;
    os << Pad("", label_w, false);
    for (size_t i = 0; i < sc.runs.size(); ++i) os << Pad("run " + std::to_string(i + 1), col_w, true);
    if (sc.runs.size() > 1) os << Pad("median", col_w, true);
    os << "\n";
    for (size_t k = 0; k < med.size(); ++k) {
      os << Pad(med[k].label, label_w, false);
      for (size_t i = 0; i < sc.runs.size(); ++i) {
        os << Pad(per_run[i].empty() ? "failed" : Cell(per_run[i][k]), col_w, true);
      }
      if (sc.runs.size() > 1) os << Pad(Cell(med[k]), col_w, true);
      os << "\n";
    }
    for (size_t i = 0; i < sc.runs.size(); ++i) {
      const RunResult& r = sc.runs[i];
      if (!r.completed) {
        os << "run " << i + 1 << " failed: " << r.error << "\n";
        continue;
      }
      os << "run " << i + 1 << " service threads, CPU s:";
      for (const auto& t : r.service_thread_cpu) {
        if (t.cpu_s >= 0.01) os << " " << t.name << "[" << t.tid << "]=" << Num(t.cpu_s, 2);
      }
      os << "\n";
    }
  }
  if (find_max.ran) {
    os << "\n== find-max: highest rate sustained with zero loss (" << Num(o.seconds, 1) << " s per trial) ==\n";
    os << Pad("rate", 10, true) << Pad("sim rate", 12, true) << Pad("published", 12, true)
       << Pad("gaps", 8, true) << Pad("bench miss", 12, true) << Pad("p99 ms*", 10, true)
       << Pad("other cores", 13, true) << Pad("sustained", 11, true) << "\n";
    for (const auto& t : find_max.trials) {
      const auto& r = t.run;
      os << Pad(Num(t.rate, 0), 10, true);
      if (!r.completed) {
        os << "  failed: " << r.error << "\n";
        continue;
      }
      os << Pad(Num(r.sim_rate, 0), 12, true) << Pad(Num(r.publish_rate, 0), 12, true)
         << Pad(std::to_string(r.sequence_gaps), 8, true) << Pad(std::to_string(r.sub_missing), 12, true)
         << Pad(Num(Ms(r.latency_steady.p99), 1), 10, true) << Pad(Num(r.other_cores, 2), 13, true)
         << Pad(r.Sustained() ? "yes" : "no", 11, true) << "\n";
    }
    os << "* latency p99 after the first second; other cores: CPU used by processes outside the chain\n";
    if (find_max.max_sustained_rate > 0) {
      os << "max sustained rate: " << Num(find_max.max_sustained_rate, 0) << " spectra/s";
      if (find_max.lowest_failed_rate > 0) os << " (" << Num(find_max.lowest_failed_rate, 0) << " was not)";
      os << "\n";
    } else {
      os << "no tried rate was sustained (lowest tried " << Num(o.find_max_min, 0) << ")\n";
    }
  }
  return os.str();
}

std::string JsonReport(const BenchOptions& o, const MachineInfo& m, const std::vector<ScenarioReport>& scenarios,
                       const FindMaxReport& find_max) {
  std::ostringstream os;
  auto metrics_object = [&](const std::vector<Metric>& ms) {
    std::string s = "{";
    for (size_t i = 0; i < ms.size(); ++i) {
      if (i) s += ", ";
      s += JsonString(ms[i].key) + ": " +
           (ms[i].is_bool ? std::string(ms[i].value != 0 ? "true" : "false") : Num(ms[i].value, std::max(ms[i].precision, 3)));
    }
    return s + "}";
  };
  auto run_object = [&](const RunResult& r) {
    std::string s = "{\"completed\": " + std::string(r.completed ? "true" : "false");
    if (!r.completed) return s + ", \"error\": " + JsonString(r.error) + "}";
    s += ", \"service_command\": " + JsonString(r.service_command);
    s += ", \"sim_command\": " + JsonString(r.sim_command);
    s += ", \"metrics\": " + metrics_object(RunMetrics(r));
    s += ", \"service_thread_cpu_s\": [";
    for (size_t i = 0; i < r.service_thread_cpu.size(); ++i) {
      const auto& t = r.service_thread_cpu[i];
      s += std::string(i ? ", " : "") + "{\"tid\": " + std::to_string(t.tid) + ", \"name\": " + JsonString(t.name) +
           ", \"cpu_s\": " + Num(t.cpu_s, 3) + "}";
    }
    return s + "]}";
  };
  os << "{\"tool\": \"specwatch-bench\"";
  os << ", \"machine\": {\"cpu\": " << JsonString(m.cpu_model) << ", \"cores\": " << m.cores
     << ", \"mem_GiB\": " << Num(m.mem_GiB, 1) << ", \"kernel\": " << JsonString(m.kernel)
     << ", \"load_at_start\": " << Num(m.load_at_start, 2) << "}";
  os << ", \"config\": {\"channels\": " << o.channels << ", \"frame_spectra\": " << o.frame_spectra
     << ", \"scan\": \"" << o.scan_width << "x" << o.scan_height << "\", \"modality\": " << JsonString(o.modality)
     << ", \"transport\": " << JsonString(o.socket == "pub" ? "pub/sub" : "push/pull")
     << ", \"denoised_payload\": " << JsonString(o.denoised_payload)
     << ", \"rank\": " << (o.rank > 0 ? std::to_string(o.rank) : "null") << ", \"repeat\": " << o.repeat
     << ", \"seconds\": " << Num(o.seconds, 3) << "}";
  os << ", \"latency_definition\": \"bench receive Unix time - DenoisedBatch.acquisition_time_s (sim's scheduled "
        "send time); includes the bench's own receive\"";
  os << ", \"scenarios\": {";
  for (size_t i = 0; i < scenarios.size(); ++i) {
    const auto& sc = scenarios[i];
    if (i) os << ", ";
    os << JsonString(sc.spec.scenario) << ": {\"rate\": " << Num(sc.spec.rate, 0)
       << ", \"seconds\": " << Num(sc.spec.seconds, 3) << ", \"runs\": [";
    for (size_t k = 0; k < sc.runs.size(); ++k) os << (k ? ", " : "") << run_object(sc.runs[k]);
    os << "], \"median\": " << metrics_object(Medians(sc.runs)) << "}";
  }
  os << "}";
  if (find_max.ran) {
    os << ", \"find_max\": {\"max_sustained_rate\": " << Num(find_max.max_sustained_rate, 0)
       << ", \"lowest_failed_rate\": " << Num(find_max.lowest_failed_rate, 0) << ", \"trials\": [";
    for (size_t k = 0; k < find_max.trials.size(); ++k) {
      os << (k ? ", " : "") << "{\"rate\": " << Num(find_max.trials[k].rate, 0)
         << ", \"sustained\": " << (find_max.trials[k].run.Sustained() ? "true" : "false")
         << ", \"run\": " << run_object(find_max.trials[k].run) << "}";
    }
    os << "]}";
  }
  os << "}\n";
  return os.str();
}

}  // namespace specwatch::bench
