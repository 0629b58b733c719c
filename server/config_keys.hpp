#pragma once
/// The config edge: one table row per key of proto/config.proto, tying the key ("novelty.guard_sigma") to the
/// ServiceOptions field it sets ("monitor.guard.sigma", the path the operators' ConfigError names) and to its
/// help line. The table drives the config file parser (through protobuf reflection), the key listing of
/// `specwatch --help`, `specwatch --print-defaults` and the naming of validation errors by key, so none of them
/// can disagree with another or with the defaults in the code. A unit test checks every field of
/// config.proto has a row. Read-only, thread-safe.

#include "server/service_options.hpp"

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <variant>

namespace specwatch::config {
class ServiceConfig;  // config.pb.h
}

namespace specwatch::server {

/// A scalar of the config file: bool, unsigned integer (every integer key is uint32 or uint64), double, string
/// (enumerations are strings: "auto", "when_idle", ...).
using ConfigValue = std::variant<bool, uint64_t, double, std::string>;

struct ConfigKey {
  std::string_view key;    ///< "pca.rank": section and field of ServiceConfig; no section for top-level keys
  std::string_view field;  ///< "pca.rank": the ServiceOptions member path ConfigError names
  std::string_view help;   ///< one line for --help
  std::function<ConfigValue(const ServiceOptions&)> get;
  /// Sets the field; throws ConfigError naming the key when the value does not fit the field (an integer beyond
  /// the field's range, a string that is not one of an enumeration's names).
  std::function<void(ServiceOptions&, const ConfigValue&)> set;
};

/// Every key, in config.proto's order (top-level fields first, then sections).
std::span<const ConfigKey> ConfigKeys();

/// The row whose field path is `field` or, for a field inside a nested options struct that has no key of its
/// own, nullptr.
const ConfigKey* ConfigKeyForField(std::string_view field);

/// The row of `key`; throws std::logic_error for a key the table does not have (a programming error).
const ConfigKey& ConfigKeyNamed(std::string_view key);

/// Sets in `options` every key a parsed config file sets. Throws ConfigError naming the key when a value does not
/// fit its field.
void ApplyConfig(const config::ServiceConfig& file, ServiceOptions* options);

/// The text of a value as protobuf text format writes it ("auto" quoted, 1e-04, true).
std::string ConfigValueText(const ConfigValue& value);

/// ServiceOptions::Validate(), with the error naming the config key of the bad field ("novelty.guard_sigma must
/// be > 0, got -1"); fields without a key keep their options path.
void ValidateNamingKeys(const ServiceOptions& options);

/// `options` as a complete config file (every key, text format): `specwatch --print-defaults` prints the
/// defaults this way, and the file reads back to the same options.
std::string ConfigText(const ServiceOptions& options);

}  // namespace specwatch::server
