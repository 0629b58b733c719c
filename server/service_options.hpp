#pragma once
/// Everything the service is configured with, typed, with its defaults in one place. Built once at start
/// from the config file (protobuf text format, proto/config.proto) and the command line, validated, then
/// read-only.

#include "operators/session/session.hpp"

#include <cstdint>
#include <string>
#include <vector>

namespace specwatch::server {

enum class ModelUpdates { kAll, kWhenIdle };
/// What a "denoised" message carries besides scores and residuals (proto/README.md, "Scores instead of spectra").
enum class DenoisedPayload { kSpectra, kScores };

/// The session's options (the science: operators/session/session.hpp) and the service's own: sockets, threads,
/// logging, periods, the model update's scheduling.
struct ServiceOptions : SessionOptions {
  std::string frames_endpoint = ">tcp://127.0.0.1:5555";  ///< "@" bind, ">" connect (default connect)
  std::string frames_socket = "sub";                      ///< "sub" or "pull"
  std::string publish_endpoint = "@tcp://127.0.0.1:5556";  ///< default bind
  std::string control_endpoint = "@tcp://127.0.0.1:5557";  ///< default bind
  std::string metrics_address = "127.0.0.1:9464";          ///< "" disables the endpoint
  uint32_t max_frames_in_flight = 16;
  uint64_t max_message_bytes = 256ull << 20;
  uint32_t compute_threads = 0;        ///< 0: one per core
  double snapshot_period_s = 5.0;      ///< 0: only on request
  double status_period_s = 1.0;        ///< 0: only on request
  std::string log_level = "info";
  double log_rate_limit_per_s = 1.0;   ///< per-frame problem lines per second, per reason
  uint32_t receive_buffer_frames = 1000;
  ModelUpdates model_updates = ModelUpdates::kWhenIdle;
  double model_update_budget = 0.25;   ///< when_idle: fraction of one core the model update may use
  DenoisedPayload denoised_payload = DenoisedPayload::kSpectra;
  std::string initial_model;           ///< snapshot file the model starts from (server/model_snapshot.hpp); "": none
  /// Throws ConfigError naming the first bad field by its path in these options ("monitor.guard.sigma"); the
  /// config edge (server/config_keys.hpp, ValidateNamingKeys) names it by its key ("novelty.guard_sigma").
  void Validate() const;
};

/// Parses a config file (protobuf text format of specwatch.config.ServiceConfig) over the defaults.
/// Throws ConfigError with the file name, line and the offending key or value.
ServiceOptions LoadConfigFile(const std::string& path, ServiceOptions base = {});

/// Result of the command line: options, or a request to print help / version.
struct CommandLine {
  ServiceOptions options;
  bool help = false;
  bool check_config = false;    ///< --check-config: validate and exit
  bool print_defaults = false;  ///< --print-defaults: print every key with its default (a config file) and exit
};

/// Parses argv: --config FILE first (anywhere on the line), then the overrides. Throws ConfigError on an
/// unknown flag or a bad value, naming it. Validates the result.
CommandLine ParseCommandLine(const std::vector<std::string>& args);

/// The text of `specwatch --help`.
std::string HelpText();

}  // namespace specwatch::server
