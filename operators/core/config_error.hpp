#pragma once
/// The one error type of the configuration plane, and the one helper that raises it.
///
/// Every options struct's Validate() (and every constructor that validates its options) throws ConfigError naming
/// the bad field by its path in the options structs ("sigma", "guard.sigma" once the enclosing struct prefixed it),
/// never by a configuration-file key: operators do not know the config file. The config edge in server/ maps
/// fields to keys (server/config_keys.hpp), so the user reads "novelty.guard_sigma must be > 0, got -1".
/// Never thrown on the data path: options are validated once at start; what depends on the data (a channel count
/// a model cannot fit) is asked with a non-throwing check (SubspaceOptions::ChannelProblem, ...).

#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

namespace specwatch {

class ConfigError : public std::runtime_error {
 public:
  /// what() = "<field> <rule>", e.g. "guard.sigma must be > 0, got -1".
  ConfigError(std::string field, std::string rule)
      : std::runtime_error(field + " " + rule), field_(std::move(field)), rule_(std::move(rule)) {}
  /// An error about no particular field (a file that cannot be read, a model that does not fit).
  explicit ConfigError(const std::string& message) : std::runtime_error(message), rule_(message) {}

  const std::string& field() const { return field_; }  ///< "" when the error is about no field
  const std::string& rule() const { return rule_; }
  /// The same error one level out: field "member.field" (nested options structs).
  ConfigError Within(std::string_view member) const {
    return field_.empty() ? *this : ConfigError(std::string(member) + "." + field_, rule_);
  }
  /// The same error naming the field by another name (the config edge: its key).
  ConfigError Named(std::string name) const { return ConfigError(std::move(name), rule_); }

 private:
  std::string field_;
  std::string rule_;
};

/// Throws ConfigError(field, "must be <rule>, got <got>") unless `ok`.
template <typename T>
void RequireOption(bool ok, std::string_view field, std::string_view rule, const T& got) {
  if (ok) return;
  std::ostringstream text;
  text << "must be " << rule << ", got " << got;
  throw ConfigError(std::string(field), text.str());
}

/// Runs `validate` (a nested struct's Validate) and names its errors' fields "member.<field>".
template <typename Validate>
void ValidateMember(std::string_view member, Validate&& validate) {
  try {
    validate();
  } catch (const ConfigError& e) {
    throw e.Within(member);
  }
}

}  // namespace specwatch
