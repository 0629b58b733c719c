#include "operators/monitor/novelty_regions.hpp"

#include "operators/core/config_error.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>
#include <string>

namespace specwatch {
namespace {

}  // namespace

void NoveltyRegionsOptions::Validate() const {
  RequireOption(max_regions >= 1, "max_regions", ">= 1", max_regions);
  RequireOption(connectivity == 4 || connectivity == 8, "connectivity", "4 or 8", connectivity);
}

NoveltyRegions::NoveltyRegions(NoveltyRegionsOptions options, ScanShape shape) : options_(options), shape_(shape) {
  options_.Validate();
  parent_.push_back(0);
}

void NoveltyRegions::Reset(ScanShape shape) {
  shape_ = shape;
  channels_ = -1;
  position_region_.clear();
  parent_.assign(1, 0);
  live_.clear();
  changed_.clear();
  merges_.clear();
  unassigned_spectra_ = 0;
  rejected_spectra_ = 0;
}

uint32_t NoveltyRegions::Find(uint32_t id) const {
  // Path halving: every other node on the way points to its grandparent; trees stay nearly flat.
  while (parent_[id] != id) {
    parent_[id] = parent_[parent_[id]];
    id = parent_[id];
  }
  return id;
}

uint32_t NoveltyRegions::NewRegion(uint32_t x, uint32_t y) {
  const auto id = static_cast<uint32_t>(parent_.size());
  parent_.push_back(id);
  State& s = live_[id];
  s.min_x = s.max_x = x;
  s.min_y = s.max_y = y;
  s.mean.assign(static_cast<size_t>(channels_), 0.0f);
  return id;
}

void NoveltyRegions::AddPosition(State& s, uint32_t x, uint32_t y) const {
  ++s.area;
  s.sum_x += x;
  s.sum_y += y;
  s.min_x = std::min(s.min_x, x);
  s.min_y = std::min(s.min_y, y);
  s.max_x = std::max(s.max_x, x);
  s.max_y = std::max(s.max_y, y);
}

void NoveltyRegions::AddSpectrum(State& s, std::span<const float> counts, double score,
                                 uint64_t frame_number) const {
  // Running mean in float: a region's mean is a display and a fingerprint, not a sum to be differenced, and the
  // update (x − m)/n keeps it accurate to float rounding whatever the number of spectra.
  ++s.spectra;
  const float inv = 1.0f / static_cast<float>(s.spectra);
  for (size_t j = 0; j < counts.size(); ++j) s.mean[j] += (counts[j] - s.mean[j]) * inv;
  if (!std::isnan(score)) {
    s.max_score = s.has_score ? std::max(s.max_score, score) : score;
    s.has_score = true;
  }
  if (s.spectra == 1) {
    s.first_frame = s.last_frame = frame_number;
  } else {
    s.first_frame = std::min(s.first_frame, frame_number);
    s.last_frame = std::max(s.last_frame, frame_number);
  }
}

void NoveltyRegions::Absorb(State& into, State&& from) {
  const double n = static_cast<double>(into.spectra + from.spectra);
  if (n > 0) {
    const double wi = static_cast<double>(into.spectra) / n;
    const double wf = static_cast<double>(from.spectra) / n;
    for (size_t j = 0; j < into.mean.size(); ++j) {
      into.mean[j] = static_cast<float>(wi * into.mean[j] + wf * from.mean[j]);
    }
  }
  if (from.spectra > 0) {
    into.first_frame = into.spectra > 0 ? std::min(into.first_frame, from.first_frame) : from.first_frame;
    into.last_frame = into.spectra > 0 ? std::max(into.last_frame, from.last_frame) : from.last_frame;
  }
  into.spectra += from.spectra;
  into.area += from.area;
  into.sum_x += from.sum_x;
  into.sum_y += from.sum_y;
  into.min_x = std::min(into.min_x, from.min_x);
  into.min_y = std::min(into.min_y, from.min_y);
  into.max_x = std::max(into.max_x, from.max_x);
  into.max_y = std::max(into.max_y, from.max_y);
  if (from.has_score) {
    into.max_score = into.has_score ? std::max(into.max_score, from.max_score) : from.max_score;
    into.has_score = true;
  }
}

RegionAddResult NoveltyRegions::Add(const ScanPosition& position, std::span<const float> counts, double score,
                                    uint64_t frame_number) {
  const uint32_t x = position.x;
  const uint32_t y = position.y;
  const bool outside = shape_.Positions() > 0 && (x >= shape_.width || y >= shape_.height);
  const bool wrong_length = channels_ >= 0 && counts.size() != static_cast<size_t>(channels_);
  if (outside || wrong_length) {
    ++rejected_spectra_;
    return {RegionChange::kRejected, 0};
  }
  if (channels_ < 0) channels_ = static_cast<int>(counts.size());

  const uint64_t key = Key(x, y);
  if (const auto it = position_region_.find(key); it != position_region_.end()) {
    const uint32_t root = Find(it->second);
    AddSpectrum(live_.at(root), counts, score, frame_number);
    changed_.insert(root);
    return {RegionChange::kRevisit, root};
  }

  // The distinct regions among the neighbours, oldest first.
  uint32_t roots[8] = {};
  int found = 0;
  for (int dy = -1; dy <= 1; ++dy) {
    for (int dx = -1; dx <= 1; ++dx) {
      if (dx == 0 && dy == 0) continue;
      if (options_.connectivity == 4 && dx != 0 && dy != 0) continue;
      if ((dx < 0 && x == 0) || (dy < 0 && y == 0)) continue;
      if ((dx > 0 && x == std::numeric_limits<uint32_t>::max()) ||
          (dy > 0 && y == std::numeric_limits<uint32_t>::max())) {
        continue;
      }
      const auto it = position_region_.find(Key(x + dx, y + dy));
      if (it == position_region_.end()) continue;
      const uint32_t root = Find(it->second);
      // Kept sorted (at most 8 entries): roots[0] is the oldest, the survivor of a merge.
      int at = found;
      while (at > 0 && roots[at - 1] > root) --at;
      if (at > 0 && roots[at - 1] == root) continue;
      for (int i = found; i > at; --i) roots[i] = roots[i - 1];
      roots[at] = root;
      ++found;
    }
  }

  RegionChange change = RegionChange::kGrew;
  uint32_t root = 0;
  if (found == 0) {
    if (live_.size() >= options_.max_regions) {
      ++unassigned_spectra_;
      return {RegionChange::kUnassigned, 0};
    }
    root = NewRegion(x, y);
    change = RegionChange::kNew;
  } else {
    root = roots[0];
    State& survivor = live_.at(root);
    for (int i = 1; i < found; ++i) {
      parent_[roots[i]] = root;
      const auto node = live_.find(roots[i]);
      Absorb(survivor, std::move(node->second));
      live_.erase(node);
      changed_.erase(roots[i]);
      merges_.push_back({roots[i], root});
    }
    if (found > 1) change = RegionChange::kMerged;
  }
  position_region_.emplace(key, root);
  State& s = live_.at(root);
  AddPosition(s, x, y);
  AddSpectrum(s, counts, score, frame_number);
  changed_.insert(root);
  return {change, root};
}

NoveltyRegion NoveltyRegions::Snapshot(uint32_t id, const State& s) const {
  NoveltyRegion r;
  r.id = id;
  r.area_positions = s.area;
  r.spectra = s.spectra;
  r.centroid_x = s.area > 0 ? s.sum_x / static_cast<double>(s.area) : 0.0;
  r.centroid_y = s.area > 0 ? s.sum_y / static_cast<double>(s.area) : 0.0;
  r.min_x = s.min_x;
  r.min_y = s.min_y;
  r.max_x = s.max_x;
  r.max_y = s.max_y;
  r.mean_counts = s.mean;
  r.max_score = s.has_score ? s.max_score : std::numeric_limits<double>::quiet_NaN();
  r.first_frame = s.first_frame;
  r.last_frame = s.last_frame;
  return r;
}

RegionChanges NoveltyRegions::TakeChanged() {
  RegionChanges out;
  std::vector<uint32_t> ids(changed_.begin(), changed_.end());
  std::sort(ids.begin(), ids.end());
  out.updated.reserve(ids.size());
  for (const uint32_t id : ids) out.updated.push_back(Snapshot(id, live_.at(id)));
  out.merges = std::move(merges_);
  merges_.clear();
  changed_.clear();
  return out;
}

std::optional<NoveltyRegion> NoveltyRegions::Region(uint32_t id) const {
  if (id == 0 || id >= parent_.size()) return std::nullopt;
  const uint32_t root = Find(id);
  const auto it = live_.find(root);
  if (it == live_.end()) return std::nullopt;
  return Snapshot(root, it->second);
}

std::vector<NoveltyRegion> NoveltyRegions::Regions() const {
  std::vector<uint32_t> ids;
  ids.reserve(live_.size());
  for (const auto& [id, state] : live_) ids.push_back(id);
  std::sort(ids.begin(), ids.end());
  std::vector<NoveltyRegion> out;
  out.reserve(ids.size());
  for (const uint32_t id : ids) out.push_back(Snapshot(id, live_.at(id)));
  return out;
}

uint32_t NoveltyRegions::RegionAt(uint32_t x, uint32_t y) const {
  const auto it = position_region_.find(Key(x, y));
  return it == position_region_.end() ? 0 : Find(it->second);
}

}  // namespace specwatch
