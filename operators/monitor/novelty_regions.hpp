#pragma once
/// Novelty regions (docs/science.md §6): the novel spectra of one series grouped into regions of adjacent scan
/// positions.
///
/// A rare phase shows up as a few neighbouring positions whose spectra the model cannot explain. Reported per
/// spectrum, one inclusion scanned at 10 positions over 5 passes is 50 messages; grouped, it is one region: one
/// novelty event when it appears, then rate-limited updates as it grows. Adjacency is 8-connectivity on the scan
/// grid (a diagonal neighbour joins), optionally 4; positions are accumulated over the passes of the series, so a
/// position flagged in any pass belongs. Regions are tracked by union-find over region ids: a position touching
/// several regions merges them, and the oldest id survives.
///
/// Contract: Add is given the spectra the caller found novel (score above its threshold), in any order. The
/// result says whether the spectrum started a new region (publish a novelty event then, and only then), grew or
/// merged one, revisited a position already in one, or was not assigned (region cap) or rejected (outside the
/// scan shape, or a spectrum of another length than the first). Region ids start at 1 and are never reused
/// until Reset; 0 means no region.
///
/// Memory: per live region D floats (the mean spectrum) plus ~150 bytes; per distinct novel position ~40 bytes
/// (hash map entry); 4 bytes per region id ever created (the union-find parents), at most one per position.
/// max_regions bounds the first term; the positions are bounded by the scan.
///
/// Concurrency: stateful, one thread at a time, the const accessors included (the union-find compresses paths
/// as it reads). A serial flow-graph stage, frames in order.

#include "operators/core/spectrum_batch.hpp"

#include <cstdint>
#include <optional>
#include <span>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

namespace specwatch {

/// Options of the region grouping (config section "novelty").
struct NoveltyRegionsOptions {
  uint32_t max_regions = 1024;  ///< live regions kept; an isolated novel position beyond them is not assigned
  int connectivity = 8;         ///< 8: diagonal neighbours join; 4: only edge neighbours
  /// Throws ConfigError naming the field ("max_regions ..."; operators/core/config_error.hpp).
  void Validate() const;
};

/// One region's statistics, as handed out (a copy).
struct NoveltyRegion {
  uint32_t id = 0;                ///< stable; on a merge the older (smaller) id survives
  uint64_t area_positions = 0;    ///< distinct scan positions
  uint64_t spectra = 0;           ///< novel spectra counted, revisits included
  double centroid_x = 0;          ///< mean x of the distinct positions
  double centroid_y = 0;
  uint32_t min_x = 0, min_y = 0, max_x = 0, max_y = 0;  ///< bounding box, inclusive
  std::vector<float> mean_counts;  ///< D: mean raw spectrum over the region's novel spectra (counts)
  double max_score = 0;            ///< largest score of its spectra (NaN scores ignored; NaN if all were)
  uint64_t first_frame = 0;        ///< smallest frame number of its spectra
  uint64_t last_frame = 0;         ///< largest
};

enum class RegionChange : uint8_t {
  kNew,         ///< the position started a new region: the one time to publish a novelty event
  kGrew,        ///< a new position joined one existing region
  kMerged,      ///< a new position joined two or more regions into one (region_id: the survivor)
  kRevisit,     ///< the position already belonged to a region (another pass, or a repeat within one)
  kUnassigned,  ///< an isolated new position while max_regions regions are live: counted, not kept
  kRejected,    ///< outside the scan shape, or the spectrum's length differs from the first one's
};

struct RegionAddResult {
  RegionChange change = RegionChange::kRejected;
  uint32_t region_id = 0;  ///< the region the spectrum now belongs to; 0 for kUnassigned and kRejected
  bool NewRegion() const { return change == RegionChange::kNew; }
};

/// A region absorbed into another by a merge since the last TakeChanged.
struct RegionMerge {
  uint32_t absorbed_id = 0;
  uint32_t into_id = 0;  ///< the survivor's id at the time of the merge (it may itself have been absorbed later)
};

/// What changed since the last TakeChanged (or Reset).
struct RegionChanges {
  std::vector<NoveltyRegion> updated;  ///< live regions created or changed, by id
  std::vector<RegionMerge> merges;     ///< in the order they happened
};

class NoveltyRegions {
 public:
  /// `shape`: the series' scan shape; 0 x 0 = unknown (positions are not bounds-checked).
  /// Throws ConfigError (options.Validate).
  explicit NoveltyRegions(NoveltyRegionsOptions options = {}, ScanShape shape = {});

  /// One novel spectrum: its scan position (the pass is ignored), raw counts (D floats; D is set by the first
  /// accepted spectrum after construction or Reset), its score and frame number.
  RegionAddResult Add(const ScanPosition& position, std::span<const float> counts, double score,
                      uint64_t frame_number);
  /// The live regions changed since the last call, and the merges; clears the record. For rate-limited
  /// "region updated" messages.
  RegionChanges TakeChanged();
  /// Forgets every region and position (series boundary, re-baseline); ids start again at 1.
  void Reset(ScanShape shape = {});

  /// The live region containing `id` (the survivor if `id` was absorbed); nullopt if there is none.
  std::optional<NoveltyRegion> Region(uint32_t id) const;
  /// All live regions, by id.
  std::vector<NoveltyRegion> Regions() const;
  /// The live region a position belongs to, 0 if none.
  uint32_t RegionAt(uint32_t x, uint32_t y) const;

  size_t region_count() const { return live_.size(); }
  uint64_t positions() const { return position_region_.size(); }     ///< distinct positions in regions
  uint64_t unassigned_spectra() const { return unassigned_spectra_; }  ///< kUnassigned results since Reset
  uint64_t rejected_spectra() const { return rejected_spectra_; }      ///< kRejected results since Reset
  int channels() const { return channels_; }                           ///< D; -1 before the first spectrum
  const NoveltyRegionsOptions& options() const { return options_; }

 private:
  struct State {
    uint64_t area = 0;
    uint64_t spectra = 0;
    double sum_x = 0;
    double sum_y = 0;
    uint32_t min_x = 0, min_y = 0, max_x = 0, max_y = 0;
    std::vector<float> mean;  // D
    double max_score = 0;
    bool has_score = false;
    uint64_t first_frame = 0;
    uint64_t last_frame = 0;
  };

  static uint64_t Key(uint32_t x, uint32_t y) { return (uint64_t{y} << 32) | x; }
  uint32_t Find(uint32_t id) const;
  uint32_t NewRegion(uint32_t x, uint32_t y);
  void AddPosition(State& s, uint32_t x, uint32_t y) const;
  void AddSpectrum(State& s, std::span<const float> counts, double score, uint64_t frame_number) const;
  static void Absorb(State& into, State&& from);
  NoveltyRegion Snapshot(uint32_t id, const State& s) const;

  NoveltyRegionsOptions options_;
  ScanShape shape_;
  int channels_ = -1;
  std::unordered_map<uint64_t, uint32_t> position_region_;  // position key -> a region id (find the root)
  mutable std::vector<uint32_t> parent_;                    // union-find over ids; parent_[0] unused
  std::unordered_map<uint32_t, State> live_;                // root id -> statistics
  std::unordered_set<uint32_t> changed_;                    // root ids changed since TakeChanged
  std::vector<RegionMerge> merges_;
  uint64_t unassigned_spectra_ = 0;
  uint64_t rejected_spectra_ = 0;
};

}  // namespace specwatch
