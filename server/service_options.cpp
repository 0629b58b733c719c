#include "server/service_options.hpp"

#include "config.pb.h"
#include "server/config_keys.hpp"
#include "operators/core/config_error.hpp"

#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/text_format.h>

#include <cmath>
#include <fstream>
#include <limits>
#include <stdexcept>
#include <sstream>

namespace specwatch::server {
namespace {

class CollectErrors : public google::protobuf::io::ErrorCollector {
 public:
  void AddError(int line, google::protobuf::io::ColumnNumber column, const std::string& message) override {
    if (!text.empty()) text += "; ";
    text += "line " + std::to_string(line + 1) + ", column " + std::to_string(column + 1) + ": " + message;
  }
  void AddWarning(int, google::protobuf::io::ColumnNumber, const std::string&) override {}
  std::string text;
};

}  // namespace

void ServiceOptions::Validate() const {
  RequireOption(frames_socket == "sub" || frames_socket == "pull", "frames_socket", "\"sub\" or \"pull\"",
                "\"" + frames_socket + "\"");
  RequireOption(!frames_endpoint.empty(), "frames_endpoint", "an endpoint", "\"\"");
  RequireOption(!publish_endpoint.empty(), "publish_endpoint", "an endpoint", "\"\"");
  RequireOption(!control_endpoint.empty(), "control_endpoint", "an endpoint", "\"\"");
  RequireOption(metrics_address.empty() || metrics_address.find(':') != std::string::npos, "metrics_address",
                "HOST:PORT (or empty to disable)", "\"" + metrics_address + "\"");
  RequireOption(max_frames_in_flight >= 1 && max_frames_in_flight <= 4096, "max_frames_in_flight", "in [1, 4096]",
                max_frames_in_flight);
  RequireOption(max_message_bytes >= 1024, "max_message_bytes", ">= 1024", max_message_bytes);
  RequireOption(compute_threads <= 256, "compute_threads", "in [0, 256]", compute_threads);
  RequireOption(std::isfinite(snapshot_period_s) && snapshot_period_s >= 0, "snapshot_period_s", ">= 0",
                snapshot_period_s);
  RequireOption(std::isfinite(status_period_s) && status_period_s >= 0, "status_period_s", ">= 0", status_period_s);
  RequireOption(log_level == "trace" || log_level == "debug" || log_level == "info" || log_level == "warn" ||
                    log_level == "error",
                "log_level", "one of trace, debug, info, warn, error", "\"" + log_level + "\"");
  RequireOption(std::isfinite(log_rate_limit_per_s) && log_rate_limit_per_s > 0, "log_rate_limit_per_s", "> 0",
                log_rate_limit_per_s);
  RequireOption(receive_buffer_frames >= 1, "receive_buffer_frames", ">= 1", receive_buffer_frames);
  RequireOption(std::isfinite(model_update_budget) && model_update_budget > 0 && model_update_budget <= 1,
                "model_update_budget", "in (0, 1]", model_update_budget);
  SessionOptions::Validate();
}

ServiceOptions LoadConfigFile(const std::string& path, ServiceOptions o) {
  std::ifstream in(path);
  if (!in) throw ConfigError("cannot read config file " + path);
  std::stringstream text;
  text << in.rdbuf();
  config::ServiceConfig c;
  google::protobuf::TextFormat::Parser parser;
  CollectErrors errors;
  parser.RecordErrorsTo(&errors);
  if (!parser.ParseFromString(text.str(), &c)) {
    throw ConfigError("config file " + path + ": " + errors.text);
  }
  try {
    ApplyConfig(c, &o);
    ValidateNamingKeys(o);
  } catch (const ConfigError& e) {
    throw ConfigError("config file " + path + ": " + e.what());
  }
  return o;
}

namespace {

/// A command-line flag: the config key it overrides, or none (--config, --check-config, --print-defaults, --help).
struct Flag {
  const char* name;
  const char* value;  ///< the argument's placeholder; "" = takes none
  const char* key;    ///< config key it sets; nullptr = none
  const char* help;   ///< the key's default is appended from the table
};

// One table drives both parsing and --help, so they cannot disagree.
const Flag kFlags[] = {
    {"--config", "FILE", nullptr, "config file, protobuf text format (deploy/specwatch.conf documents every key)"},
    {"--frames", "ENDPOINT", "frames_endpoint", "detector frames (@ bind, > connect)"},
    {"--frames-socket", "sub|pull", "frames_socket", "socket type for frames"},
    {"--publish", "ENDPOINT", "publish_endpoint", "results PUB socket"},
    {"--control", "ENDPOINT", "control_endpoint", "control REP socket"},
    {"--metrics", "HOST:PORT", "metrics_address", "Prometheus endpoint; \"\" disables"},
    {"--rank", "K", "pca.rank", "PCA components used to denoise (with pca.auto_rank: the most)"},
    {"--threads", "N", "compute_threads", "compute threads, 0 = one per core"},
    {"--denoised-payload", "spectra|scores", "denoised_payload", "what denoised messages carry"},
    {"--initial-model", "FILE", "initial_model", "start from the model in this snapshot file (save_model, tap recording)"},
    {"--dose-budget", "E_PER_A2", "dose.position_budget_e_per_A2", "dose budget per scan position, e-/A^2; 0 = none"},
    {"--false-alarm-rate", "A", "novelty.false_alarm_rate", "novelty false alarms per nominal spectrum"},
    {"--energy-correction", "auto|on|off", "drift.energy_correction",
     "shift the model to follow the energy axis (auto: EELS with the zero-loss peak)"},
    {"--log-level", "LEVEL", "log_level", "trace, debug, info, warn, error"},
    {"--check-config", "", nullptr, "validate the configuration and exit"},
    {"--print-defaults", "", nullptr, "print every config key with its default (a complete config file) and exit"},
    {"--help", "", nullptr, "this text"},
};

/// The flag's text as a value of the key's type.
ConfigValue ParseFlagValue(const std::string& flag, const ConfigValue& like, const std::string& v) {
  if (std::holds_alternative<std::string>(like)) return v;
  if (std::holds_alternative<bool>(like)) {
    if (v == "true") return true;
    if (v == "false") return false;
    throw ConfigError(flag + " needs true or false, got \"" + v + "\"");
  }
  try {
    size_t used = 0;
    if (std::holds_alternative<uint64_t>(like)) {
      if (v.empty() || v[0] == '-') throw std::invalid_argument(v);
      const unsigned long long x = std::stoull(v, &used);
      if (used != v.size()) throw std::invalid_argument(v);
      return static_cast<uint64_t>(x);
    }
    const double x = std::stod(v, &used);
    if (used != v.size()) throw std::invalid_argument(v);
    return x;
  } catch (const std::exception&) {
    throw ConfigError(flag + (std::holds_alternative<uint64_t>(like) ? " needs a non-negative integer"
                                                                       : " needs a number") +
                      ", got \"" + v + "\"");
  }
}

}  // namespace

CommandLine ParseCommandLine(const std::vector<std::string>& args) {
  CommandLine cl;
  for (size_t i = 0; i + 1 < args.size(); ++i) {
    if (args[i] == "--config") cl.options = LoadConfigFile(args[i + 1]);
  }
  ServiceOptions& o = cl.options;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--help" || a == "-h") {
      cl.help = true;
      continue;
    }
    if (a == "--check-config") {
      cl.check_config = true;
      continue;
    }
    if (a == "--print-defaults") {
      cl.print_defaults = true;
      continue;
    }
    const Flag* flag = nullptr;
    for (const auto& f : kFlags) {
      if (a == f.name) flag = &f;
    }
    if (flag == nullptr) throw ConfigError("unknown option " + a + " (see specwatch --help)");
    if (i + 1 >= args.size()) throw ConfigError(a + " needs a value: " + flag->value);
    const std::string v = args[++i];
    if (flag->key == nullptr) continue;  // --config, read first
    const ConfigKey& k = ConfigKeyNamed(flag->key);
    try {
      k.set(o, ParseFlagValue(a, k.get(o), v));
    } catch (const ConfigError& e) {
      throw ConfigError(a + " (" + std::string(k.key) + "): " + e.rule());
    }
  }
  if (!cl.help && !cl.print_defaults) {
    try {
      ValidateNamingKeys(o);
    } catch (const ConfigError& e) {
      // Name the flag that set the key, when one did.
      for (const auto& f : kFlags) {
        if (f.key != nullptr && e.field() == f.key) {
          for (const std::string& a : args) {
            if (a == f.name) throw ConfigError(std::string(f.name) + " (" + e.field() + ") " + e.rule());
          }
        }
      }
      throw;
    }
  }
  return cl;
}

std::string HelpText() {
  std::ostringstream os;
  os << "specwatch: real-time streaming PCA denoising of detector spectra.\n\n"
        "usage: specwatch [--config FILE] [--frames ENDPOINT] [--publish ENDPOINT] [--control ENDPOINT]\n"
        "                 [--metrics HOST:PORT] [options]\n\n"
        "Command-line values override the config file.\n\noptions:\n";
  const ServiceOptions d;
  for (const auto& f : kFlags) {
    std::string left = std::string("  ") + f.name + (f.value[0] ? std::string(" ") + f.value : "");
    if (left.size() < 26) left.resize(26, ' ');
    os << left << " " << f.help;
    if (f.key != nullptr) os << " (" << f.key << ", default " << ConfigValueText(ConfigKeyNamed(f.key).get(d)) << ")";
    os << "\n";
  }
  os << "\nconfig file keys (protobuf text format, e.g. `pca { rank: 12 }`), with defaults\n"
        "(deploy/specwatch.conf explains each; docs/science.md the formulas):\n";
  std::string_view section;
  for (const ConfigKey& k : ConfigKeys()) {
    const size_t dot = k.key.find('.');
    const std::string_view s = dot == std::string_view::npos ? std::string_view() : k.key.substr(0, dot);
    const std::string_view name = dot == std::string_view::npos ? k.key : k.key.substr(dot + 1);
    if (s != section) {
      if (!section.empty()) os << "  }\n";
      if (!s.empty()) os << "  " << s << " {\n";
      section = s;
    }
    std::string left = std::string(section.empty() ? "  " : "    ") + std::string(name) + ": " +
                       ConfigValueText(k.get(d));
    if (left.size() < 40) left.resize(40, ' ');
    os << left << " " << k.help << "\n";
  }
  if (!section.empty()) os << "  }\n";
  return os.str();
}

}  // namespace specwatch::server
