#include "server/config_keys.hpp"

#include "config.pb.h"
#include "operators/core/config_error.hpp"

#include <google/protobuf/text_format.h>

#include <array>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <type_traits>
#include <utility>

namespace specwatch::server {
namespace {

template <typename E>
struct EnumNames;
template <>
struct EnumNames<ModelUpdates> {
  static constexpr std::array<std::pair<ModelUpdates, std::string_view>, 2> kNames{
      {{ModelUpdates::kAll, "all"}, {ModelUpdates::kWhenIdle, "when_idle"}}};
};
template <>
struct EnumNames<Weighting> {
  static constexpr std::array<std::pair<Weighting, std::string_view>, 3> kNames{
      {{Weighting::kAuto, "auto"}, {Weighting::kPoisson, "poisson"}, {Weighting::kNone, "none"}}};
};
template <>
struct EnumNames<EnergyCorrection> {
  static constexpr std::array<std::pair<EnergyCorrection, std::string_view>, 3> kNames{
      {{EnergyCorrection::kAuto, "auto"}, {EnergyCorrection::kOn, "on"}, {EnergyCorrection::kOff, "off"}}};
};
template <>
struct EnumNames<DenoisedPayload> {
  static constexpr std::array<std::pair<DenoisedPayload, std::string_view>, 2> kNames{
      {{DenoisedPayload::kSpectra, "spectra"}, {DenoisedPayload::kScores, "scores"}}};
};

// Numbers convert between the two numeric alternatives: an options field may be a double where the file's key is an
// integer (novelty.min_model_spectra).
double AsDouble(const ConfigValue& v) {
  return std::holds_alternative<uint64_t>(v) ? static_cast<double>(std::get<uint64_t>(v)) : std::get<double>(v);
}
uint64_t AsUnsigned(const ConfigValue& v) {
  return std::holds_alternative<double>(v) ? static_cast<uint64_t>(std::get<double>(v)) : std::get<uint64_t>(v);
}

template <typename T>
ConfigValue ToValue(const T& v) {
  if constexpr (std::is_same_v<T, bool>) {
    return v;
  } else if constexpr (std::is_enum_v<T>) {
    for (const auto& [e, name] : EnumNames<T>::kNames) {
      if (e == v) return std::string(name);
    }
    return std::string("?");
  } else if constexpr (std::is_integral_v<T>) {
    return static_cast<uint64_t>(v);
  } else if constexpr (std::is_floating_point_v<T>) {
    return static_cast<double>(v);
  } else {
    return std::string(v);
  }
}

template <typename T>
void FromValue(const ConfigValue& value, std::string_view key, T* field) {
  if constexpr (std::is_same_v<T, bool>) {
    *field = std::get<bool>(value);
  } else if constexpr (std::is_enum_v<T>) {
    const std::string& text = std::get<std::string>(value);
    std::string names;
    for (const auto& [e, name] : EnumNames<T>::kNames) {
      if (name == text) {
        *field = e;
        return;
      }
      names += (names.empty() ? "\"" : ", \"") + std::string(name) + "\"";
    }
    throw ConfigError(std::string(key), "must be one of " + names + ", got \"" + text + "\"");
  } else if constexpr (std::is_integral_v<T>) {
    const uint64_t v = AsUnsigned(value);
    RequireOption(v <= static_cast<uint64_t>(std::numeric_limits<T>::max()), key,
                  "<= " + std::to_string(std::numeric_limits<T>::max()), v);
    *field = static_cast<T>(v);
  } else if constexpr (std::is_floating_point_v<T>) {
    *field = static_cast<T>(AsDouble(value));
  } else {
    *field = std::get<std::string>(value);
  }
}

// One row: the key, the ServiceOptions member it sets (its path is the text of the expression), the help line.
#define SPECWATCH_CONFIG_KEY(key_, member_, help_)                                              \
  ConfigKey {                                                                                    \
    key_, #member_, help_, [](const ServiceOptions& o) -> ConfigValue { return ToValue(o.member_); }, \
        [](ServiceOptions& o, const ConfigValue& v) { FromValue(v, key_, &o.member_); }          \
  }

const std::vector<ConfigKey>& Table() {
  static const std::vector<ConfigKey> table = {
      SPECWATCH_CONFIG_KEY("frames_endpoint", frames_endpoint, "detector frames (@ bind, > connect)"),
      SPECWATCH_CONFIG_KEY("frames_socket", frames_socket, "sub | pull"),
      SPECWATCH_CONFIG_KEY("publish_endpoint", publish_endpoint, "results PUB socket"),
      SPECWATCH_CONFIG_KEY("control_endpoint", control_endpoint, "control REP socket"),
      SPECWATCH_CONFIG_KEY("metrics_address", metrics_address, "Prometheus HOST:PORT; \"\" disables"),
      SPECWATCH_CONFIG_KEY("max_frames_in_flight", max_frames_in_flight, "frames inside the flow graph at once"),
      SPECWATCH_CONFIG_KEY("max_message_bytes", max_message_bytes, "larger messages are rejected (too_large)"),
      SPECWATCH_CONFIG_KEY("compute_threads", compute_threads, "0 = one per core"),
      SPECWATCH_CONFIG_KEY("snapshot_period_s", snapshot_period_s, "model snapshot period, 0 = on request only"),
      SPECWATCH_CONFIG_KEY("status_period_s", status_period_s, "status message period, 0 = on request only"),
      SPECWATCH_CONFIG_KEY("log_level", log_level, "trace | debug | info | warn | error"),
      SPECWATCH_CONFIG_KEY("log_rate_limit_per_s", log_rate_limit_per_s,
                           "per-frame problem log lines per second and reason"),
      SPECWATCH_CONFIG_KEY("receive_buffer_frames", receive_buffer_frames, "ZeroMQ receive high-water mark, messages"),
      SPECWATCH_CONFIG_KEY("model_updates", model_updates,
                           "all | when_idle (skip learning from frames arriving during an update)"),
      SPECWATCH_CONFIG_KEY("model_update_budget", model_update_budget,
                           "when_idle: fraction of one core the model update may use"),
      SPECWATCH_CONFIG_KEY("denoised_payload", denoised_payload,
                           "spectra | scores (clients rebuild spectra from scores + snapshot)"),
      SPECWATCH_CONFIG_KEY("initial_model", initial_model,
                           "snapshot file to start from (save_model, a specwatch-tap recording); \"\" = empty"),
      SPECWATCH_CONFIG_KEY("pca.rank", pca.rank, "components used to denoise (with auto_rank: the most)"),
      SPECWATCH_CONFIG_KEY("pca.oversample", pca.oversample, "extra components tracked"),
      SPECWATCH_CONFIG_KEY("pca.block", pca.block, "spectra per model update"),
      SPECWATCH_CONFIG_KEY("pca.forgetting", pca.forgetting, "per spectrum, (0, 1]; memory 1/(1-forgetting)"),
      SPECWATCH_CONFIG_KEY("pca.reset_on_new_series", reset_model_on_new_series, "fresh model at each series start"),
      SPECWATCH_CONFIG_KEY("pca.warmup_spectra", warmup_spectra, "spectra learnt before the model denoises"),
      SPECWATCH_CONFIG_KEY("pca.weighting", weighting, "auto (Poisson for integer payloads) | poisson | none"),
      SPECWATCH_CONFIG_KEY("pca.calibration_spectra", weighting_options.calibration_spectra,
                           "Poisson weighting: spectra whose mean shape fixes the weights"),
      SPECWATCH_CONFIG_KEY("pca.weight_floor", weighting_options.floor_fraction,
                           "weights' floor, fraction of the mean channel"),
      SPECWATCH_CONFIG_KEY("pca.auto_rank", pca.auto_rank,
                           "rank by the Gavish-Donoho threshold, within [rank_min, rank]"),
      SPECWATCH_CONFIG_KEY("pca.rank_min", pca.rank_min, "auto_rank: fewest components"),
      SPECWATCH_CONFIG_KEY("pca.weight_refresh_imbalance", weighting_options.refresh_imbalance,
                           "weights also recomputed when max/mean of the channels' noise variance exceeds this; 0 = off"),
      SPECWATCH_CONFIG_KEY("pca.weight_refresh_spectra", weighting_options.refresh_spectra,
                           "weights recomputed after 1, 2, 4 ... x calibration_spectra, then every N; 0 = never"),
      SPECWATCH_CONFIG_KEY("pca.rank_hysteresis", pca.rank_hysteresis,
                           "auto_rank: a component joins above tau x (1 + h), leaves below tau x (1 - h)"),
      SPECWATCH_CONFIG_KEY("pca.min_component_support", pca.min_component_support,
                           "the first fit holds out spectra carrying a component of fewer spectra; 0 = off"),
      SPECWATCH_CONFIG_KEY("novelty.enabled", monitor.novelty, "count data with a Poisson-weighted model"),
      SPECWATCH_CONFIG_KEY("novelty.false_alarm_rate", monitor.detector.false_alarm_rate, "per nominal spectrum"),
      SPECWATCH_CONFIG_KEY("novelty.calibration_spectra", monitor.detector.calibration_spectra,
                           "nominal spectra the thresholds are learnt from"),
      SPECWATCH_CONFIG_KEY("novelty.hotelling", monitor.detector.use_hotelling, "also Hotelling T^2 of the scores"),
      SPECWATCH_CONFIG_KEY("novelty.regime_window_spectra", monitor.detector.regime_window_spectra,
                           "recent spectra for the novel fraction"),
      SPECWATCH_CONFIG_KEY("novelty.regime_fraction", monitor.detector.regime_fraction,
                           "novel fraction that means a new phase"),
      SPECWATCH_CONFIG_KEY("novelty.absorb_spectra", monitor.detector.absorb_spectra,
                           "learnt unflagged after a new phase"),
      SPECWATCH_CONFIG_KEY("novelty.contributions", monitor.contributions, "channels listed per event"),
      SPECWATCH_CONFIG_KEY("novelty.max_regions", monitor.regions.max_regions, "novelty regions per series"),
      SPECWATCH_CONFIG_KEY("novelty.min_model_spectra", monitor.min_model_spectra,
                           "spectra learnt before calibration and the energy reference start"),
      SPECWATCH_CONFIG_KEY("novelty.guard", monitor.guard.enabled,
                           "until the fitted thresholds exist, flag by a provisional threshold from the first scores"),
      SPECWATCH_CONFIG_KEY("novelty.guard_sigma", monitor.guard.sigma,
                           "cap of the provisional threshold: median + guard_sigma x robust sigma of the recent scores"),
      SPECWATCH_CONFIG_KEY("novelty.retrospective", monitor.retrospective.enabled,
                           "at each pass end, score the pass's candidate spectra again with the pass-end model"),
      SPECWATCH_CONFIG_KEY("novelty.retrospective_max_spectra", monitor.retrospective.max_spectra,
                           "candidate spectra kept per pass for it (x channels x 4 bytes)"),
      SPECWATCH_CONFIG_KEY("drift.energy", monitor.energy, "track the energy axis"),
      SPECWATCH_CONFIG_KEY("drift.energy_correction", monitor.energy_correction,
                           "auto (EELS with the zero-loss peak in range) | on | off"),
      SPECWATCH_CONFIG_KEY("drift.energy_block_spectra", monitor.energy_shift.block_spectra,
                           "spectra per shift estimate"),
      SPECWATCH_CONFIG_KEY("drift.energy_min_shift_channels", monitor.energy_shift.min_shift_channels,
                           "smallest shift reported"),
      SPECWATCH_CONFIG_KEY("drift.subspace", subspace_drift_enabled, "principal angles to the reference basis"),
      SPECWATCH_CONFIG_KEY("drift.subspace_threshold_deg", subspace_drift.threshold_deg, "largest angle reported"),
      SPECWATCH_CONFIG_KEY("drift.subspace_check_spectra", subspace_check_spectra, "spectra learnt between checks"),
      SPECWATCH_CONFIG_KEY("drift.statistics", monitor.statistics, "CUSUM on block means of the novelty score"),
      SPECWATCH_CONFIG_KEY("drift.cusum_block_spectra", monitor.cusum.block_spectra, "spectra per block mean"),
      SPECWATCH_CONFIG_KEY("dose.position_budget_e_per_A2", dose_budget.position_e_per_A2,
                           "per scan position, over its visits; 0 = none"),
      SPECWATCH_CONFIG_KEY("dose.run_budget_e_per_A2", dose_budget.run_e_per_A2,
                           "the run dose (every spectrum's areal dose summed); 0 = none"),
      SPECWATCH_CONFIG_KEY("dose.warning_fraction", dose_budget.warning_fraction,
                           "warning alarms at this fraction of a budget"),
      SPECWATCH_CONFIG_KEY("advice.tile_px", advice.tile_px, "tile edge in scan positions"),
      SPECWATCH_CONFIG_KEY("advice.revisit_dose_factor", advice.revisit_dose_factor,
                           "revisits at this many times the latest dose per spectrum"),
      SPECWATCH_CONFIG_KEY("advice.min_interval_s", advice.min_interval_s,
                           "published at most this often (and at each pass end)"),
      SPECWATCH_CONFIG_KEY("damage.enabled", damage.enabled, "spectra changing with the dose their position received"),
      SPECWATCH_CONFIG_KEY("damage.bins", damage.bins, "energy bins of the comparison with the first visit"),
      SPECWATCH_CONFIG_KEY("damage.max_positions", damage.max_positions,
                           "positions tracked (a regular subgrid of the scan)"),
      SPECWATCH_CONFIG_KEY("damage.detect_sigma", damage.detect_sigma,
                           "warning when a visit group's mean change passes this"),
  };
  return table;
}

#undef SPECWATCH_CONFIG_KEY

}  // namespace

std::span<const ConfigKey> ConfigKeys() { return Table(); }

const ConfigKey& ConfigKeyNamed(std::string_view key) {
  for (const ConfigKey& k : Table()) {
    if (k.key == key) return k;
  }
  throw std::logic_error("no config key " + std::string(key));  // a typo in a flag table: its unit test runs them
}

namespace {

/// "pca.rank" -> the section's field of ServiceConfig ("pca"; null for a top-level key) and the field's name.
std::pair<const google::protobuf::FieldDescriptor*, std::string> SplitKey(std::string_view key) {
  const size_t dot = key.find('.');
  if (dot == std::string_view::npos) return {nullptr, std::string(key)};
  return {config::ServiceConfig::descriptor()->FindFieldByName(std::string(key.substr(0, dot))),
          std::string(key.substr(dot + 1))};
}

}  // namespace

void ApplyConfig(const config::ServiceConfig& c, ServiceOptions* options) {
  using FD = google::protobuf::FieldDescriptor;
  for (const ConfigKey& k : Table()) {
    const auto [section, name] = SplitKey(k.key);
    if (section != nullptr && !c.GetReflection()->HasField(c, section)) continue;
    const google::protobuf::Message& m = section ? c.GetReflection()->GetMessage(c, section) : c;
    const FD* f = m.GetDescriptor()->FindFieldByName(name);
    const google::protobuf::Reflection* r = m.GetReflection();
    if (!r->HasField(m, f)) continue;
    switch (f->cpp_type()) {
      case FD::CPPTYPE_BOOL: k.set(*options, r->GetBool(m, f)); break;
      case FD::CPPTYPE_UINT32: k.set(*options, uint64_t{r->GetUInt32(m, f)}); break;
      case FD::CPPTYPE_UINT64: k.set(*options, r->GetUInt64(m, f)); break;
      case FD::CPPTYPE_DOUBLE: k.set(*options, r->GetDouble(m, f)); break;
      case FD::CPPTYPE_STRING: k.set(*options, r->GetString(m, f)); break;
      default: throw std::logic_error("config key " + std::string(k.key) + " has a type the table does not know");
    }
  }
}

const ConfigKey* ConfigKeyForField(std::string_view field) {
  for (const ConfigKey& k : Table()) {
    if (k.field == field) return &k;
  }
  return nullptr;
}

std::string ConfigValueText(const ConfigValue& value) {
  return std::visit(
      [](const auto& v) -> std::string {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, bool>) {
          return v ? "true" : "false";
        } else if constexpr (std::is_same_v<T, std::string>) {
          std::string out = "\"";
          for (const char c : v) {
            if (c == '"' || c == '\\') out += '\\';
            out += c;
          }
          return out + "\"";
        } else {
          std::ostringstream os;
          os << v;
          return os.str();
        }
      },
      value);
}

void ValidateNamingKeys(const ServiceOptions& options) {
  try {
    options.Validate();
  } catch (const ConfigError& e) {
    if (const ConfigKey* k = ConfigKeyForField(e.field())) throw e.Named(std::string(k->key));
    throw;
  }
}

std::string ConfigText(const ServiceOptions& options) {
  config::ServiceConfig c;
  for (const ConfigKey& k : Table()) {
    const auto [section, name] = SplitKey(k.key);
    google::protobuf::Message* m = section ? c.GetReflection()->MutableMessage(&c, section) : &c;
    const auto* f = m->GetDescriptor()->FindFieldByName(name);
    const auto* r = m->GetReflection();
    const ConfigValue v = k.get(options);
    switch (f->cpp_type()) {
      case google::protobuf::FieldDescriptor::CPPTYPE_BOOL: r->SetBool(m, f, std::get<bool>(v)); break;
      case google::protobuf::FieldDescriptor::CPPTYPE_UINT32:
        r->SetUInt32(m, f, static_cast<uint32_t>(AsUnsigned(v)));
        break;
      case google::protobuf::FieldDescriptor::CPPTYPE_UINT64: r->SetUInt64(m, f, AsUnsigned(v)); break;
      case google::protobuf::FieldDescriptor::CPPTYPE_DOUBLE: r->SetDouble(m, f, AsDouble(v)); break;
      case google::protobuf::FieldDescriptor::CPPTYPE_STRING: r->SetString(m, f, std::get<std::string>(v)); break;
      default: break;  // config.proto has no other scalar types (tested)
    }
  }
  std::string text;
  google::protobuf::TextFormat::PrintToString(c, &text);
  return text;
}

}  // namespace specwatch::server
