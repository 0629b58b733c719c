#include "operators/monitor/residual_map.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

namespace specwatch {
namespace {

double MedianInPlace(std::vector<float>& v) {
  const size_t n = v.size();
  const auto mid = v.begin() + static_cast<std::ptrdiff_t>(n / 2);
  std::nth_element(v.begin(), mid, v.end());
  if (n % 2 == 1) return *mid;
  const float below = *std::max_element(v.begin(), mid);  // the largest of the lower half
  return 0.5 * (static_cast<double>(below) + *mid);
}

}  // namespace

RobustSummary SummariseRobust(std::span<const float> values, double outlier_sigma) {
  RobustSummary s;
  std::vector<float> finite;
  finite.reserve(values.size());
  for (float v : values) {
    if (std::isfinite(v)) finite.push_back(v);
  }
  s.count = finite.size();
  if (finite.empty()) return s;
  s.max = *std::max_element(finite.begin(), finite.end());
  s.median = MedianInPlace(finite);
  for (float& v : finite) v = static_cast<float>(std::abs(v - s.median));
  s.robust_sigma = 1.4826 * MedianInPlace(finite);
  s.outlier_threshold = s.median + outlier_sigma * s.robust_sigma;
  if (s.robust_sigma > 0) {
    for (float v : values) {
      if (std::isfinite(v) && v >= s.outlier_threshold) ++s.outliers;
    }
  }
  return s;
}

void ResidualMapper::Open(const ScanShape& shape, uint32_t pass, uint64_t frame_number) {
  open_.emplace();
  open_->shape = shape;
  open_->pass = pass;
  open_->values.assign(shape.Positions(), std::numeric_limits<float>::quiet_NaN());
  open_->first_frame = frame_number;
  open_->last_frame = frame_number;
  seen_.assign(shape.Positions(), 0);
  positions_seen_ = 0;
}

PassMap ResidualMapper::Finish(std::string closed_by) {
  PassMap m = std::move(*open_);
  open_.reset();
  m.closed_by = std::move(closed_by);
  m.summary = SummariseRobust(m.values, outlier_sigma_);
  last_closed_ = m.pass;
  return m;
}

std::vector<PassMap> ResidualMapper::Add(const ResidualFrame& f) {
  std::vector<PassMap> done;
  if (f.shape.Positions() == 0 || f.shape.Positions() > max_positions_) {
    spectra_unmapped_ += f.positions.size();
    return done;
  }
  if (open_ && (open_->shape.width != f.shape.width || open_->shape.height != f.shape.height)) {
    done.push_back(Finish("scan_shape"));
    last_closed_.reset();  // pass numbers of another scan
  }
  const bool scored = !f.values.empty();
  for (size_t i = 0; i < f.positions.size(); ++i) {
    const ScanPosition& p = f.positions[i];
    if (last_closed_ && p.pass <= *last_closed_) continue;  // a pass already handed out
    if (open_ && p.pass < open_->pass) continue;           // an earlier pass than the open one
    if (open_ && p.pass > open_->pass) done.push_back(Finish("next_pass"));
    if (!open_) Open(f.shape, p.pass, f.frame_number);
    PassMap& m = *open_;
    m.last_frame = f.frame_number;
    ++m.spectra;
    if (p.x >= m.shape.width || p.y >= m.shape.height) {
      ++m.spectra_outside;
      continue;
    }
    const size_t at = size_t{p.y} * m.shape.width + p.x;
    constexpr uint8_t kSeen = 1, kNovel = 2;
    if (!(seen_[at] & kSeen)) {
      seen_[at] |= kSeen;
      ++positions_seen_;
    }
    if (i < f.novel.size() && f.novel[i] && !(seen_[at] & kNovel)) {
      seen_[at] |= kNovel;
      ++m.novel_positions;
    }
    if (scored && m.statistic.empty()) m.statistic = std::string(f.statistic);
    if (!scored || m.statistic != f.statistic || !std::isfinite(f.values[i])) {
      ++m.spectra_unscored;
    } else {
      float& v = m.values[at];
      if (std::isnan(v)) {
        v = f.values[i];
        ++m.positions_scored;
      } else {
        v = std::max(v, f.values[i]);
      }
      m.model_version = f.model_version;
    }
    if (positions_seen_ == m.shape.Positions()) done.push_back(Finish("complete"));
  }
  return done;
}

std::optional<PassMap> ResidualMapper::Close(const std::string& reason) {
  std::optional<PassMap> out;
  if (open_) out = Finish(reason);
  last_closed_.reset();
  return out;
}

}  // namespace specwatch
