#include "server/service_options.hpp"

#include "config.pb.h"
#include "operators/core/config_error.hpp"

#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/text_format.h>

#include <cmath>
#include <fstream>
#include <limits>
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

void Require(bool ok, const std::string& message) {
  if (!ok) throw ConfigError(message);
}

std::string Str(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

ModelUpdates ParseModelUpdates(const std::string& v, const std::string& where) {
  if (v == "all") return ModelUpdates::kAll;
  if (v == "when_idle") return ModelUpdates::kWhenIdle;
  throw ConfigError(where + " must be \"all\" or \"when_idle\", got \"" + v + "\"");
}

Weighting ParseWeighting(const std::string& v, const std::string& where) {
  if (v == "auto") return Weighting::kAuto;
  if (v == "poisson") return Weighting::kPoisson;
  if (v == "none") return Weighting::kNone;
  throw ConfigError(where + " must be \"auto\", \"poisson\" or \"none\", got \"" + v + "\"");
}

EnergyCorrection ParseEnergyCorrection(const std::string& v, const std::string& where) {
  if (v == "auto") return EnergyCorrection::kAuto;
  if (v == "on") return EnergyCorrection::kOn;
  if (v == "off") return EnergyCorrection::kOff;
  throw ConfigError(where + " must be \"auto\", \"on\" or \"off\", got \"" + v + "\"");
}

DenoisedPayload ParseDenoisedPayload(const std::string& v, const std::string& where) {
  if (v == "spectra") return DenoisedPayload::kSpectra;
  if (v == "scores") return DenoisedPayload::kScores;
  throw ConfigError(where + " must be \"spectra\" or \"scores\", got \"" + v + "\"");
}

}  // namespace

void ServiceOptions::Validate() const {
  Require(frames_socket == "sub" || frames_socket == "pull",
          "frames_socket must be \"sub\" or \"pull\", got \"" + frames_socket + "\"");
  Require(!frames_endpoint.empty(), "frames_endpoint must not be empty");
  Require(!publish_endpoint.empty(), "publish_endpoint must not be empty");
  Require(!control_endpoint.empty(), "control_endpoint must not be empty");
  Require(metrics_address.empty() || metrics_address.find(':') != std::string::npos,
          "metrics_address must be HOST:PORT (or empty to disable), got \"" + metrics_address + "\"");
  Require(max_frames_in_flight >= 1 && max_frames_in_flight <= 4096,
          "max_frames_in_flight must be in [1, 4096], got " + std::to_string(max_frames_in_flight));
  Require(max_message_bytes >= 1024, "max_message_bytes must be >= 1024, got " + std::to_string(max_message_bytes));
  Require(compute_threads <= 256, "compute_threads must be in [0, 256], got " + std::to_string(compute_threads));
  Require(std::isfinite(snapshot_period_s) && snapshot_period_s >= 0,
          "snapshot_period_s must be >= 0, got " + Str(snapshot_period_s));
  Require(std::isfinite(status_period_s) && status_period_s >= 0,
          "status_period_s must be >= 0, got " + Str(status_period_s));
  Require(log_level == "trace" || log_level == "debug" || log_level == "info" || log_level == "warn" ||
              log_level == "error",
          "log_level must be one of trace, debug, info, warn, error; got \"" + log_level + "\"");
  Require(std::isfinite(log_rate_limit_per_s) && log_rate_limit_per_s > 0,
          "log_rate_limit_per_s must be > 0, got " + Str(log_rate_limit_per_s));
  Require(receive_buffer_frames >= 1, "receive_buffer_frames must be >= 1");
  Require(std::isfinite(model_update_budget) && model_update_budget > 0 && model_update_budget <= 1,
          "model_update_budget must be in (0, 1], got " + Str(model_update_budget));
  // Channel-dependent limits (rank + oversample <= channels) are checked when the first frame arrives.
  pca.Validate(/*channels=*/1 << 16);
  weighting_options.Validate();
  monitor.Validate();
  subspace_drift.Validate();
  Require(subspace_check_spectra >= 1, "drift.subspace_check_spectra must be >= 1");
  dose_budget.Validate();
  advice.Validate();
  damage.Validate();
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
  if (c.has_frames_endpoint()) o.frames_endpoint = c.frames_endpoint();
  if (c.has_frames_socket()) o.frames_socket = c.frames_socket();
  if (c.has_publish_endpoint()) o.publish_endpoint = c.publish_endpoint();
  if (c.has_control_endpoint()) o.control_endpoint = c.control_endpoint();
  if (c.has_metrics_address()) o.metrics_address = c.metrics_address();
  if (c.has_max_frames_in_flight()) o.max_frames_in_flight = c.max_frames_in_flight();
  if (c.has_max_message_bytes()) o.max_message_bytes = c.max_message_bytes();
  if (c.has_compute_threads()) o.compute_threads = c.compute_threads();
  if (c.has_snapshot_period_s()) o.snapshot_period_s = c.snapshot_period_s();
  if (c.has_status_period_s()) o.status_period_s = c.status_period_s();
  if (c.has_log_level()) o.log_level = c.log_level();
  if (c.has_log_rate_limit_per_s()) o.log_rate_limit_per_s = c.log_rate_limit_per_s();
  if (c.has_receive_buffer_frames()) o.receive_buffer_frames = c.receive_buffer_frames();
  if (c.has_model_updates()) o.model_updates = ParseModelUpdates(c.model_updates(), "model_updates");
  if (c.has_model_update_budget()) o.model_update_budget = c.model_update_budget();
  if (c.has_denoised_payload()) o.denoised_payload = ParseDenoisedPayload(c.denoised_payload(), "denoised_payload");
  if (c.has_initial_model()) o.initial_model = c.initial_model();
  if (c.has_pca()) {
    const auto& p = c.pca();
    if (p.has_rank()) o.pca.rank = static_cast<int>(p.rank());
    if (p.has_oversample()) o.pca.oversample = static_cast<int>(p.oversample());
    if (p.has_block()) o.pca.block = static_cast<int>(p.block());
    if (p.has_forgetting()) o.pca.forgetting = p.forgetting();
    if (p.has_reset_on_new_series()) o.reset_model_on_new_series = p.reset_on_new_series();
    if (p.has_warmup_spectra()) o.warmup_spectra = p.warmup_spectra();
    if (p.has_weighting()) o.weighting = ParseWeighting(p.weighting(), "pca.weighting");
    if (p.has_calibration_spectra()) o.weighting_options.calibration_spectra = static_cast<int>(p.calibration_spectra());
    if (p.has_weight_floor()) o.weighting_options.floor_fraction = p.weight_floor();
    if (p.has_weight_refresh_spectra()) {
      o.weighting_options.refresh_spectra = static_cast<int>(p.weight_refresh_spectra());
    }
    if (p.has_auto_rank()) o.pca.auto_rank = p.auto_rank();
    if (p.has_rank_min()) o.pca.rank_min = static_cast<int>(p.rank_min());
    if (p.has_rank_hysteresis()) o.pca.rank_hysteresis = p.rank_hysteresis();
  }
  if (c.has_novelty()) {
    const auto& n = c.novelty();
    NoveltyOptions& d = o.monitor.detector;
    if (n.has_enabled()) o.monitor.novelty = n.enabled();
    if (n.has_false_alarm_rate()) d.false_alarm_rate = n.false_alarm_rate();
    if (n.has_calibration_spectra()) d.calibration_spectra = n.calibration_spectra();
    if (n.has_hotelling()) d.use_hotelling = n.hotelling();
    if (n.has_regime_window_spectra()) d.regime_window_spectra = n.regime_window_spectra();
    if (n.has_regime_fraction()) d.regime_fraction = n.regime_fraction();
    if (n.has_absorb_spectra()) d.absorb_spectra = n.absorb_spectra();
    if (n.has_contributions()) o.monitor.contributions = static_cast<int>(n.contributions());
    if (n.has_max_regions()) o.monitor.regions.max_regions = n.max_regions();
    if (n.has_min_model_spectra()) o.monitor.min_model_spectra = n.min_model_spectra();
    if (n.has_guard()) o.monitor.guard.enabled = n.guard();
    if (n.has_guard_sigma()) o.monitor.guard.sigma = n.guard_sigma();
  }
  if (c.has_drift()) {
    const auto& d = c.drift();
    if (d.has_energy()) o.monitor.energy = d.energy();
    if (d.has_energy_correction()) {
      o.monitor.energy_correction = ParseEnergyCorrection(d.energy_correction(), "drift.energy_correction");
    }
    if (d.has_energy_block_spectra()) o.monitor.energy_shift.block_spectra = static_cast<int>(d.energy_block_spectra());
    if (d.has_energy_min_shift_channels()) {
      o.monitor.energy_shift.min_shift_channels = d.energy_min_shift_channels();
    };
    if (d.has_subspace()) o.subspace_drift_enabled = d.subspace();
    if (d.has_subspace_threshold_deg()) o.subspace_drift.threshold_deg = d.subspace_threshold_deg();
    if (d.has_subspace_check_spectra()) o.subspace_check_spectra = d.subspace_check_spectra();
    if (d.has_statistics()) o.monitor.statistics = d.statistics();
    if (d.has_cusum_block_spectra()) o.monitor.cusum.block_spectra = static_cast<int>(d.cusum_block_spectra());
  }
  if (c.has_dose()) {
    const auto& d = c.dose();
    if (d.has_position_budget_e_per_a2()) o.dose_budget.position_e_per_A2 = d.position_budget_e_per_a2();
    if (d.has_run_budget_e_per_a2()) o.dose_budget.run_e_per_A2 = d.run_budget_e_per_a2();
    if (d.has_warning_fraction()) o.dose_budget.warning_fraction = d.warning_fraction();
  }
  if (c.has_advice()) {
    const auto& a = c.advice();
    if (a.has_tile_px()) o.advice.tile_px = a.tile_px();
    if (a.has_revisit_dose_factor()) o.advice.revisit_dose_factor = a.revisit_dose_factor();
    if (a.has_min_interval_s()) o.advice.min_interval_s = a.min_interval_s();
  }
  if (c.has_damage()) {
    const auto& d = c.damage();
    if (d.has_enabled()) o.damage.enabled = d.enabled();
    if (d.has_bins()) o.damage.bins = static_cast<int>(d.bins());
    if (d.has_max_positions()) o.damage.max_positions = d.max_positions();
    if (d.has_detect_sigma()) o.damage.detect_sigma = d.detect_sigma();
  }
  try {
    o.Validate();
  } catch (const ConfigError& e) {
    throw ConfigError("config file " + path + ": " + e.what());
  }
  return o;
}

namespace {

struct Flag {
  const char* name;
  const char* value;
  const char* help;
};

// One table drives both parsing and --help, so they cannot disagree.
const Flag kFlags[] = {
    {"--config", "FILE", "config file, protobuf text format (deploy/specwatch.conf documents every key)"},
    {"--frames", "ENDPOINT", "detector frames, default >tcp://127.0.0.1:5555 (@ bind, > connect)"},
    {"--frames-socket", "sub|pull", "socket type for frames, default sub"},
    {"--publish", "ENDPOINT", "results PUB socket, default @tcp://127.0.0.1:5556"},
    {"--control", "ENDPOINT", "control REP socket, default @tcp://127.0.0.1:5557"},
    {"--metrics", "HOST:PORT", "Prometheus endpoint, default 127.0.0.1:9464; \"\" disables"},
    {"--rank", "K", "PCA components used to denoise, default 8 (with pca.auto_rank, the default: the most)"},
    {"--threads", "N", "compute threads, default 0 = one per core"},
    {"--denoised-payload", "spectra|scores", "what denoised messages carry, default spectra"},
    {"--initial-model", "FILE", "start from the model in this snapshot file (save_model, tap recording)"},
    {"--dose-budget", "E_PER_A2", "dose budget per scan position, e-/A^2 (dose.position_budget_e_per_A2); 0 = none"},
    {"--false-alarm-rate", "A", "novelty false alarms per nominal spectrum, default 1e-4"},
    {"--energy-correction", "auto|on|off", "shift the model to follow the energy axis, default auto (EELS + ZLP)"},
    {"--log-level", "LEVEL", "trace, debug, info (default), warn, error"},
    {"--check-config", "", "validate the configuration, print it and exit"},
    {"--help", "", "this text"},
};

uint64_t ParseUnsigned(const std::string& flag, const std::string& v) {
  try {
    size_t used = 0;
    const long long x = std::stoll(v, &used);
    if (used != v.size() || x < 0) throw std::invalid_argument(v);
    return static_cast<uint64_t>(x);
  } catch (const std::exception&) {
    throw ConfigError(flag + " needs a non-negative integer, got \"" + v + "\"");
  }
}

double ParseDouble(const std::string& flag, const std::string& v) {
  try {
    size_t used = 0;
    const double x = std::stod(v, &used);
    if (used != v.size()) throw std::invalid_argument(v);
    return x;
  } catch (const std::exception&) {
    throw ConfigError(flag + " needs a number, got \"" + v + "\"");
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
    const Flag* flag = nullptr;
    for (const auto& f : kFlags) {
      if (a == f.name) flag = &f;
    }
    if (flag == nullptr) throw ConfigError("unknown option " + a + " (see specwatch --help)");
    if (i + 1 >= args.size()) throw ConfigError(a + " needs a value: " + flag->value);
    const std::string v = args[++i];
    if (a == "--config") continue;
    if (a == "--frames") o.frames_endpoint = v;
    if (a == "--frames-socket") o.frames_socket = v;
    if (a == "--publish") o.publish_endpoint = v;
    if (a == "--control") o.control_endpoint = v;
    if (a == "--metrics") o.metrics_address = v;
    if (a == "--rank") o.pca.rank = static_cast<int>(ParseUnsigned(a, v));
    if (a == "--threads") o.compute_threads = static_cast<uint32_t>(ParseUnsigned(a, v));
    if (a == "--log-level") o.log_level = v;
    if (a == "--denoised-payload") o.denoised_payload = ParseDenoisedPayload(v, a);
    if (a == "--initial-model") o.initial_model = v;
    if (a == "--dose-budget") o.dose_budget.position_e_per_A2 = ParseDouble(a, v);
    if (a == "--false-alarm-rate") o.monitor.detector.false_alarm_rate = ParseDouble(a, v);
    if (a == "--energy-correction") o.monitor.energy_correction = ParseEnergyCorrection(v, a);
  }
  if (!cl.help) o.Validate();
  return cl;
}

std::string HelpText() {
  std::ostringstream os;
  os << "specwatch: real-time streaming PCA denoising of detector spectra.\n\n"
        "usage: specwatch [--config FILE] [--frames ENDPOINT] [--publish ENDPOINT] [--control ENDPOINT]\n"
        "                 [--metrics HOST:PORT] [options]\n\n"
        "Command-line values override the config file.\n\noptions:\n";
  for (const auto& f : kFlags) {
    std::string left = std::string("  ") + f.name + (f.value[0] ? std::string(" ") + f.value : "");
    if (left.size() < 26) left.resize(26, ' ');
    os << left << " " << f.help << "\n";
  }
  const ServiceOptions d;
  os << "\nconfig file keys (protobuf text format, e.g. `pca { rank: 12 }`), with defaults:\n"
     << "  frames_endpoint: \"" << d.frames_endpoint << "\"\n"
     << "  frames_socket: \"" << d.frames_socket << "\"            sub | pull\n"
     << "  publish_endpoint: \"" << d.publish_endpoint << "\"\n"
     << "  control_endpoint: \"" << d.control_endpoint << "\"\n"
     << "  metrics_address: \"" << d.metrics_address << "\"    \"\" disables\n"
     << "  max_frames_in_flight: " << d.max_frames_in_flight << "           frames inside the flow graph at once\n"
     << "  max_message_bytes: " << d.max_message_bytes << "       larger messages are rejected (too_large)\n"
     << "  compute_threads: " << d.compute_threads << "                 0 = one per core\n"
     << "  snapshot_period_s: " << d.snapshot_period_s << "               model snapshot period, 0 = on request only\n"
     << "  status_period_s: " << d.status_period_s << "                 status message period, 0 = on request only\n"
     << "  log_level: \"" << d.log_level << "\"\n"
     << "  log_rate_limit_per_s: " << d.log_rate_limit_per_s << "            per-frame problem log lines per second and reason\n"
     << "  receive_buffer_frames: " << d.receive_buffer_frames << "        ZeroMQ receive high-water mark, messages\n"
     << "  model_updates: \"when_idle\"       all | when_idle (skip learning from frames arriving during an update)\n"
     << "  model_update_budget: " << d.model_update_budget << "           when_idle: fraction of one core the model update may use\n"
     << "  denoised_payload: \"spectra\"      spectra | scores (clients rebuild spectra from scores + snapshot)\n"
     << "  initial_model: \"\"               snapshot file to start from (written by the control command\n"
     << "                                  save_model, or a specwatch-tap recording); \"\" = start empty\n"
     << "  pca {\n"
     << "    rank: " << d.pca.rank << "                        components used to denoise\n"
     << "    oversample: " << d.pca.oversample << "                  extra components tracked\n"
     << "    block: " << d.pca.block << "                      spectra per model update\n"
     << "    forgetting: " << d.pca.forgetting << "                 per spectrum, (0, 1]; memory 1/(1-forgetting)\n"
     << "    reset_on_new_series: false     fresh model at each series start\n"
     << "    warmup_spectra: " << d.warmup_spectra << "            spectra learnt before the model denoises\n"
     << "    weighting: \"auto\"              auto (Poisson for integer payloads) | poisson | none\n"
     << "    calibration_spectra: " << d.weighting_options.calibration_spectra
     << "      Poisson weighting: spectra whose mean shape fixes the weights\n"
     << "    weight_floor: " << d.weighting_options.floor_fraction << "             weights' floor, fraction of the mean channel\n"
     << "    weight_refresh_spectra: " << d.weighting_options.refresh_spectra
     << "  weights recomputed after 1, 2, 4 ... x calibration_spectra, then every N; 0 = never\n"
     << "    auto_rank: " << (d.pca.auto_rank ? "true" : "false") << "               rank by the Gavish-Donoho threshold, within [rank_min, rank]\n"
     << "    rank_min: " << d.pca.rank_min << "                    auto_rank: fewest components\n"
     << "    rank_hysteresis: " << d.pca.rank_hysteresis
     << "           auto_rank: a component joins above tau x (1 + h), leaves below tau x (1 - h)\n"
     << "  }\n"
     << "  novelty {                        (docs/novelty_and_drift.md)\n"
     << "    enabled: true                  count data with a Poisson-weighted model\n"
     << "    false_alarm_rate: " << d.monitor.detector.false_alarm_rate << "         per nominal spectrum\n"
     << "    calibration_spectra: " << d.monitor.detector.calibration_spectra
     << "     nominal spectra the thresholds are learnt from\n"
     << "    hotelling: true                also Hotelling T^2 of the scores\n"
     << "    regime_window_spectra: " << d.monitor.detector.regime_window_spectra
     << "    recent spectra for the novel fraction\n"
     << "    regime_fraction: " << d.monitor.detector.regime_fraction
     << "           novel fraction that means a new phase\n"
     << "    absorb_spectra: " << d.monitor.detector.absorb_spectra
     << "           learnt unflagged after a new phase\n"
     << "    contributions: " << d.monitor.contributions << "               channels listed per event\n"
     << "    max_regions: " << d.monitor.regions.max_regions << "              novelty regions per series\n"
     << "    min_model_spectra: " << d.monitor.min_model_spectra
     << "      spectra learnt before calibration and the energy reference start\n"
     << "    guard: true                    until the thresholds exist, hold rare outliers out of the model\n"
     << "    guard_sigma: " << d.monitor.guard.sigma
     << "                ... above median + guard_sigma x robust sigma of the recent scores\n"
     << "  }\n"
     << "  drift {\n"
     << "    energy: true                   track the energy axis\n"
     << "    energy_correction: \"auto\"      auto (EELS with the zero-loss peak in range) | on | off\n"
     << "    energy_block_spectra: " << d.monitor.energy_shift.block_spectra << "       spectra per shift estimate\n"
     << "    energy_min_shift_channels: " << d.monitor.energy_shift.min_shift_channels << "  smallest shift reported\n"
     << "    subspace: true                 principal angles to the reference basis\n"
     << "    subspace_threshold_deg: " << d.subspace_drift.threshold_deg << "      largest angle reported\n"
     << "    subspace_check_spectra: " << d.subspace_check_spectra << "    spectra learnt between checks\n"
     << "    statistics: true               CUSUM on block means of the novelty score\n"
     << "    cusum_block_spectra: " << d.monitor.cusum.block_spectra << "        spectra per block mean\n"
     << "  }\n"
     << "  dose {                           (docs/science.md §8; budgets per series: control set_dose_budget)\n"
     << "    position_budget_e_per_A2: 0    per scan position, over its visits; 0 = none\n"
     << "    run_budget_e_per_A2: 0         the run dose (every spectrum's areal dose summed); 0 = none\n"
     << "    warning_fraction: " << d.dose_budget.warning_fraction << "          warning alarms at this fraction of a budget\n"
     << "  }\n"
     << "  advice {                         per tile: revisit (novelty, budget left) | skip (budget spent, damage) | continue\n"
     << "    tile_px: " << d.advice.tile_px << "                     tile edge in scan positions\n"
     << "    revisit_dose_factor: " << d.advice.revisit_dose_factor << "         revisits at this many times the latest dose per spectrum\n"
     << "    min_interval_s: " << d.advice.min_interval_s << "              published at most this often (and at each pass end)\n"
     << "  }\n"
     << "  damage {                         spectra changing with the dose their position received\n"
     << "    enabled: true\n"
     << "    bins: " << d.damage.bins << "                      energy bins of the comparison with the first visit\n"
     << "    max_positions: " << d.damage.max_positions << "           positions tracked (a regular subgrid of the scan)\n"
     << "    detect_sigma: " << d.damage.detect_sigma << "                warning when a visit group's mean change passes this\n"
     << "  }\n";
  return os.str();
}

}  // namespace specwatch::server
