#pragma once
/// Where the phases are on the scan grid: Voronoi-like regions around well-spread seeds with smooth
/// mixing across the boundaries, an optional rare inclusion phase in small clusters, and an optional
/// phase that grows from a nucleus over the passes (operando). Abundances are fractions of the signal
/// and sum to 1 at every pixel and pass. Immutable after construction; safe to read from any thread.

#include <cstdint>
#include <span>
#include <vector>

namespace specwatch::sim {

struct SceneOptions {
  uint32_t width = 64;
  uint32_t height = 64;
  int base_phases = 3;
  double inclusion_fraction = 0.0;   ///< fraction of pixels in the inclusion mask (0 = no inclusion phase)
  double inclusion_abundance = 0.6;  ///< abundance of the inclusion phase inside the mask
  bool grow = false;                 ///< add a phase growing over the passes
  uint32_t passes = 1;
  uint64_t seed = 1;
};

class Scene {
 public:
  explicit Scene(const SceneOptions& options);

  /// Phase columns: base phases 0..B-1, then the inclusion phase (if any), then the grow phase (if any).
  int PhaseCount() const { return phase_count_; }
  int BasePhaseCount() const { return options_.base_phases; }
  int InclusionIndex() const { return inclusion_index_; }  ///< -1 without inclusion
  int GrowIndex() const { return grow_index_; }            ///< -1 without grow phase
  uint32_t Width() const { return options_.width; }
  uint32_t Height() const { return options_.height; }
  uint64_t Pixels() const { return uint64_t{options_.width} * options_.height; }

  /// Abundance of every phase at (x, y) during `pass`; `out` has PhaseCount() entries, sums to 1.
  void Abundances(uint32_t x, uint32_t y, uint32_t pass, std::span<double> out) const;
  /// Pass-independent map (the grow phase not applied): pixel = y·width + x.
  double StaticAbundance(uint64_t pixel, int phase) const { return static_[pixel * phase_count_ + phase]; }
  bool InInclusion(uint64_t pixel) const { return inclusion_mask_[pixel] != 0; }
  uint64_t InclusionPixelCount() const { return inclusion_pixels_; }
  double InclusionAbundance() const { return options_.inclusion_abundance; }

  /// Grow phase: abundance g = ½(1 − tanh((r − R_p)/edge)) around the nucleus, R_p = R_max·p/(passes−1),
  /// g = 0 in pass 0; the other phases are scaled by 1 − g.
  double GrowAbundance(uint32_t x, uint32_t y, uint32_t pass) const;
  double GrowRadius(uint32_t pass) const;
  double GrowCentreX() const { return grow_cx_; }
  double GrowCentreY() const { return grow_cy_; }
  double GrowEdge() const { return grow_edge_; }
  double BoundaryWidth() const { return boundary_width_; }
  /// Voronoi seeds (pixel coordinates of the region centres), one per base phase.
  const std::vector<std::pair<double, double>>& Seeds() const { return seeds_; }

 private:
  SceneOptions options_;
  int phase_count_ = 0;
  int inclusion_index_ = -1;
  int grow_index_ = -1;
  std::vector<double> static_;          ///< pixels x phase_count_
  std::vector<uint8_t> inclusion_mask_;
  uint64_t inclusion_pixels_ = 0;
  std::vector<std::pair<double, double>> seeds_;
  double boundary_width_ = 1.0;
  double grow_cx_ = 0.0, grow_cy_ = 0.0, grow_rmax_ = 0.0, grow_edge_ = 1.0;
};

}  // namespace specwatch::sim
