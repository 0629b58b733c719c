#include "operators/monitor/retrospective_buffer.hpp"

#include "operators/core/config_error.hpp"

#include <algorithm>
#include <cmath>

namespace specwatch {

void RetrospectiveOptions::Validate() const {
  RequireOption(max_spectra >= 1 && max_spectra <= (1 << 20), "max_spectra", "in [1, 1048576]", max_spectra);
  RequireOption(candidate_sigma >= 0.0, "candidate_sigma", ">= 0", candidate_sigma);
}

RetrospectiveBuffer::RetrospectiveBuffer(RetrospectiveOptions options) : options_(options) { options_.Validate(); }

void RetrospectiveBuffer::Offer(RetrospectiveCandidate candidate) {
  if (!options_.enabled) return;
  if (kept_.size() < static_cast<size_t>(options_.max_spectra)) {
    kept_.push_back(std::move(candidate));
    return;
  }
  // Full: the lowest-priority kept one (the earliest among equals) makes room, if the newcomer outranks it.
  // O(max_spectra) per eviction; evictions are rare (the buffer holds a pass's outliers, not its bulk).
  const auto lowest = std::min_element(kept_.begin(), kept_.end(), [](const auto& a, const auto& b) {
    return a.priority < b.priority;
  });
  ++evicted_;
  if (candidate.priority <= lowest->priority) return;
  kept_.erase(lowest);
  kept_.push_back(std::move(candidate));
}

std::vector<RetrospectiveCandidate> RetrospectiveBuffer::Take(uint32_t pass) {
  std::vector<RetrospectiveCandidate> taken, rest;
  for (RetrospectiveCandidate& c : kept_) (c.position.pass == pass ? taken : rest).push_back(std::move(c));
  kept_ = std::move(rest);
  return taken;
}

void RetrospectiveBuffer::RankScored(double location, double scale, double min_priority) {
  std::erase_if(kept_, [&](RetrospectiveCandidate& c) {
    if (!std::isinf(c.priority) || std::isnan(c.live_z)) return false;
    c.priority = (c.live_z - location) / scale;
    return c.priority <= min_priority;
  });
}

}  // namespace specwatch
