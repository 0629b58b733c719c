// specwatch-tap: subscribe to a specwatch publish socket and print one line per message (or JSON lines),
// keep counts, gaps and restarts per topic, optionally record the raw messages to a file.

#include "results.pb.h"
#include "stream/endpoint.hpp"
#include "stream/large_message_heap.hpp"
#include "stream/recording.hpp"
#include "tools/common/command_line.hpp"

#include <google/protobuf/util/json_util.h>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace {

volatile std::sig_atomic_t g_stop = 0;  // written by the signal handler only
void OnSignal(int) { g_stop = 1; }

const char* kHelp =
    "specwatch-tap: print what a specwatch service publishes.\n\n"
    "usage: specwatch-tap --endpoint ENDPOINT [--json] [--seconds S] [--count N] [--record FILE]\n"
    "                     [--topics T1,T2]\n\n"
    "  --endpoint ENDPOINT  the service's publish socket, e.g. tcp://127.0.0.1:5556 (connects; @ binds)\n"
    "  --json               one JSON object per line (envelope as protobuf JSON, plus topic and payload size)\n"
    "  --seconds S          stop after S seconds (default: run until Ctrl-C)\n"
    "  --count N            stop after N messages\n"
    "  --record FILE        append every message to FILE (format in tools/tap/README.md); a recording\n"
    "                       holding snapshot messages can be given to specwatch --initial-model\n"
    "  --topics T1,T2       subscribe to these topics only (default: all)\n"
    "  --quiet              print only the summary\n\n"
    "At the end a summary per topic goes to stderr: messages, gaps (missing sequence numbers), restarts\n"
    "(publisher epoch changes). Exit status 0.\n";

struct TopicStats {
  uint64_t messages = 0;
  uint64_t missing = 0;   // sequence numbers never seen
  uint64_t restarts = 0;  // publisher epoch changed
  uint64_t last_sequence = 0;
  uint64_t epoch = 0;
};

std::string Line(const std::string& topic, const specwatch::wire::Envelope& e, size_t payload_bytes) {
  std::ostringstream os;
  os << topic << " seq=" << e.sequence() << " series=" << e.series_id();
  switch (e.body_case()) {
    case specwatch::wire::Envelope::kDenoised: {
      const auto& d = e.denoised();
      std::vector<float> r(d.residual_norm().begin(), d.residual_norm().end());
      float median = 0;
      if (!r.empty()) {
        std::nth_element(r.begin(), r.begin() + r.size() / 2, r.end());
        median = r[r.size() / 2];
      }
      os << " frame=" << d.frame_number() << " spectra=" << d.spectrum_count() << " channels=" << d.channel_count()
         << " pass=" << d.scan_pass() << " rank=" << d.rank() << " model=" << d.model_version()
         << " residual_median=" << median;
      if (!d.positions().empty()) os << " first=(" << d.positions(0).x() << "," << d.positions(0).y() << ")";
      if (d.spectra_omitted()) os << " scores_only";
      break;
    }
    case specwatch::wire::Envelope::kSnapshot: {
      const auto& s = e.snapshot();
      os << " reason=" << s.reason() << " rank=" << s.rank() << " channels=" << s.channel_count()
         << " seen=" << s.spectra_seen() << " version=" << s.model_version() << " sv=[";
      for (int i = 0; i < s.singular_values_size() && i < 4; ++i) os << (i ? "," : "") << s.singular_values(i);
      os << (s.singular_values_size() > 4 ? ",...]" : "]");
      double explained = 0;
      for (double v : s.explained_variance()) explained += v;
      os << " explained=" << explained;
      break;
    }
    case specwatch::wire::Envelope::kRankChange: {
      const auto& c = e.rank_change();
      os << " rank " << c.old_rank() << "->" << c.new_rank() << " version=" << c.model_version()
         << " seen=" << c.spectra_seen() << " tau=" << c.rank_threshold() << " sigma=" << c.noise_sigma() << " sv["
         << c.first_index() << ":]=[";
      for (int i = 0; i < c.singular_values_size(); ++i) os << (i ? "," : "") << c.singular_values(i);
      os << "]";
      break;
    }
    case specwatch::wire::Envelope::kResidualMap: {
      const auto& r = e.residual_map();
      os << " pass=" << r.scan_pass() << " scan=" << r.width() << "x" << r.height() << " " << r.statistic()
         << " closed_by=" << r.closed_by() << " scored=" << r.positions_scored() << "/"
         << uint64_t{r.width()} * r.height() << " median=" << r.median() << " robust_sigma=" << r.robust_sigma()
         << " outliers_5sigma=" << r.outliers() << " max=" << r.max() << " frames=" << r.first_frame_number()
         << "-" << r.last_frame_number();
      break;
    }
    case specwatch::wire::Envelope::kStatus: {
      const auto& s = e.status();
      os << " state=" << s.state() << " frames=" << s.frames_received() << " spectra=" << s.spectra_received()
         << " published=" << s.spectra_published() << " rejected=" << s.spectra_rejected()
         << " missing_frames=" << s.sequence_gaps() << " rank=" << s.rank() << " in_flight=" << s.frames_in_flight();
      break;
    }
    default:
      os << " (unknown body)";
  }
  os << " payload=" << payload_bytes << "B";
  return os.str();
}

void Record(std::ofstream& out, const std::vector<zmq::message_t>& parts) {
  std::vector<std::string_view> views;
  for (const auto& p : parts) views.emplace_back(static_cast<const char*>(p.data()), p.size());
  specwatch::stream::WriteRecord(out, views);
}

}  // namespace

int main(int argc, char** argv) {
  if (!specwatch::stream::RetainHeapForLargeMessages()) std::fprintf(stderr, "specwatch-tap: heap settings refused\n");
  std::string endpoint, record, topics;
  bool json = false, quiet = false;
  double seconds = 0;
  uint64_t count = 0;
  std::vector<std::string> args(argv + 1, argv + argc);
  bool help = false;
  try {
    using Error = std::invalid_argument;
    const specwatch::tools::FlagActions flags = {
        {"--help", [&] { help = true; }},
        {"-h", [&] { help = true; }},
        {"--json", [&] { json = true; }},
        {"--quiet", [&] { quiet = true; }},
    };
    const specwatch::tools::ValueActions values = {
        {"--endpoint", [&](auto&, auto& v) { endpoint = v; }},
        {"--seconds", [&](auto& n, auto& v) { seconds = specwatch::tools::ParseNumber<Error>(n, v, 0.0); }},
        {"--count", [&](auto& n, auto& v) { count = specwatch::tools::ParseInteger<Error, uint64_t>(n, v); }},
        {"--record", [&](auto&, auto& v) { record = v; }},
        {"--topics", [&](auto&, auto& v) { topics = v; }},
    };
    specwatch::tools::ParseCommandLine<Error>(args, flags, values);
    if (help) {
      std::cout << kHelp;
      return 0;
    }
    if (endpoint.empty()) throw std::invalid_argument("--endpoint is required (see --help)");
  } catch (const std::exception& e) {
    std::cerr << "specwatch-tap: " << e.what() << "\n";
    return 2;
  }

  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  zmq::context_t context(1);
  zmq::socket_t sub(context, zmq::socket_type::sub);
  sub.set(zmq::sockopt::rcvhwm, 100000);
  if (topics.empty()) {
    sub.set(zmq::sockopt::subscribe, "");
  } else {
    std::stringstream ss(topics);
    for (std::string t; std::getline(ss, t, ',');) sub.set(zmq::sockopt::subscribe, t);
  }
  try {
    specwatch::stream::Attach(
        sub, specwatch::stream::ParseEndpoints(endpoint, specwatch::stream::Direction::kConnect, "--endpoint"));
  } catch (const std::exception& e) {
    std::cerr << "specwatch-tap: " << e.what() << "\n";
    return 2;
  }
  std::ofstream recording;
  if (!record.empty()) {
    recording.open(record, std::ios::binary | std::ios::app);
    if (!recording) {
      std::cerr << "specwatch-tap: cannot write " << record << "\n";
      return 2;
    }
  }

  std::map<std::string, TopicStats> stats;
  const auto start = std::chrono::steady_clock::now();
  uint64_t received = 0;
  std::vector<zmq::message_t> parts;
  zmq::pollitem_t item{sub.handle(), 0, ZMQ_POLLIN, 0};
  while (!g_stop && (count == 0 || received < count)) {
    if (seconds > 0 && std::chrono::steady_clock::now() - start >= std::chrono::duration<double>(seconds)) break;
    parts.clear();
    try {
      if (zmq::poll(&item, 1, std::chrono::milliseconds(50)) <= 0) continue;
      if (!zmq::recv_multipart(sub, std::back_inserter(parts), zmq::recv_flags::dontwait)) continue;
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) continue;  // a signal: the loop condition sees g_stop
      throw;
    }
    ++received;
    if (recording.is_open()) Record(recording, parts);
    const std::string topic = parts[0].to_string();
    specwatch::wire::Envelope env;
    if (parts.size() < 2 || !env.ParseFromArray(parts[1].data(), static_cast<int>(parts[1].size()))) {
      std::cerr << "specwatch-tap: message on topic '" << topic << "' has no valid envelope\n";
      continue;
    }
    TopicStats& s = stats[topic];
    if (s.messages > 0 && env.publisher_epoch() != s.epoch) {
      ++s.restarts;
    } else if (s.messages > 0 && env.sequence() > s.last_sequence + 1) {
      s.missing += env.sequence() - s.last_sequence - 1;
    }
    s.epoch = env.publisher_epoch();
    s.last_sequence = env.sequence();
    ++s.messages;
    const size_t payload = parts.size() > 2 ? parts[2].size() : 0;
    if (quiet) continue;
    if (json) {
      std::string body;
      google::protobuf::util::JsonPrintOptions opts;
      opts.preserve_proto_field_names = true;
      (void)google::protobuf::util::MessageToJsonString(env, &body, opts);
      std::cout << "{\"topic\":\"" << topic << "\",\"payload_bytes\":" << payload << ",\"envelope\":" << body
                << "}\n";
    } else {
      std::cout << Line(topic, env, payload) << "\n";
    }
    std::cout.flush();
  }
  for (const auto& [topic, s] : stats) {
    std::cerr << "specwatch-tap: " << topic << ": " << s.messages << " messages, " << s.missing
              << " missing, " << s.restarts << " restarts\n";
  }
  std::cerr << "specwatch-tap: " << received << " messages in total\n";
  return 0;
}
