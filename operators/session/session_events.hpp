#pragma once
/// What a Session reports: plain C++ values, one struct per kind of result, in the order they are to be published.
/// stream/result_codec.hpp turns each into its message (proto/README.md names the topic of each); nothing here knows
/// protobuf. Events own their data (copies), so they may be handed to another thread.

#include "operators/core/spectrum_batch.hpp"
#include "operators/dose/acquisition_advisor.hpp"
#include "operators/dose/damage_tracker.hpp"
#include "operators/dose/dose_ledger.hpp"
#include "operators/model/denoiser.hpp"
#include "operators/model/incremental_svd.hpp"
#include "operators/monitor/novelty_regions.hpp"
#include "operators/monitor/operando_monitor.hpp"
#include "operators/monitor/residual_map.hpp"
#include "operators/monitor/tail_threshold.hpp"

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace specwatch {

/// The per-spectrum part of a frame, computed with a read-only model (Session::Score, any thread).
struct FrameScores {
  DenoiseResult result;                       ///< reconstruction, scores, residuals
  std::shared_ptr<const PcaModel> model;      ///< the model used; null: none usable yet (data passed through)
  bool weighted = false;                      ///< the model is Poisson-weighted: deviance_z is a score
  std::optional<Eigen::VectorXd> frame_sum;   ///< counts summed over the spectra (energy tracking on), D
  bool Usable() const { return model != nullptr; }
  uint32_t Rank() const { return model ? static_cast<uint32_t>(model->rank) : 0; }
  uint64_t ModelVersion() const { return model ? model->version : 0; }
};
using FrameScoresPtr = std::shared_ptr<const FrameScores>;

/// Marks where the frame's own "denoised" message goes among the frame's events (built from the batch and its
/// FrameScores: ResultCodec::Denoised).
struct DenoisedFrameEvent {
  uint64_t frame_number = 0;
  uint64_t spectra = 0;
};

/// The novelty detector changed state (topic novelty, NoveltyCalibration).
struct CalibrationEvent {
  std::string state;   ///< "calibrating", "monitoring", "absorbing"
  std::string reason;  ///< "series_start", "model_reset", "request", "regime_change", "complete", "absorbed"
  double false_alarm_rate = 0.0;
  uint64_t calibration_spectra = 0;
  bool use_hotelling = true;
  std::optional<TailFit> deviance;   ///< when monitoring
  std::optional<TailFit> hotelling;  ///< when monitoring with use_hotelling
  bool reference_region = false;
};

/// The first spectrum of a new novelty region (topic novelty, NoveltyEvent).
struct NoveltyEvent {
  uint64_t frame_number = 0;         ///< of the spectrum's frame (also for a retrospective event)
  double acquisition_time_s = 0.0;   ///< of the spectrum's frame
  /// Found at its pass end by the pass-end model, not flagged live (retrospective_buffer.hpp); the thresholds,
  /// rank and model version are those of the rescoring.
  bool retrospective = false;
  NoveltyHit hit;
  double deviance_threshold = 0.0;
  double hotelling_threshold = 0.0;  ///< 0 when Hotelling is off
  double false_alarm_rate = 0.0;
  EnergyAxis axis;                   ///< the frame's
  uint32_t rank = 0;
  uint64_t model_version = 0;
  std::vector<float> spectra;        ///< 3 x D: raw counts, reconstruction, residual
};

/// A region created, grown or merged (topic novelty, NoveltyRegion).
struct RegionEvent {
  NoveltyRegion region;
  std::vector<uint32_t> merged_region_ids;  ///< regions absorbed into this one by the frame
};

enum class DriftKind { kEnergy, kSubspace, kStatistics, kNewPhase, kOther };
DriftKind DriftKindOf(const std::string& kind);

/// Energy-axis, subspace, score-statistics drift or a new phase (topic drift, DriftEvent).
struct DriftEvent {
  DriftKind kind = DriftKind::kOther;
  DriftReport report;            ///< report.kind: the wire name
  uint64_t frame_number = 0;     ///< of the frame it was detected at
  double time_s = 0.0;           ///< that frame's acquisition time
  double onset_time_s = 0.0;     ///< acquisition time of the frame holding the onset spectrum
  uint64_t model_version = 0;
  EnergyAxis axis;               ///< the frame's (empty for subspace drift)
  std::vector<double> angles_deg;  ///< subspace: principal angles
};

/// A dose budget's warning level or limit was reached (topic dose, DoseAlarm).
struct DoseAlarmEvent {
  DoseAlarm alarm;
  uint64_t frame_number = 0;
  double time_s = 0.0;
};

/// Beam damage: the series' warning, or an update of the critical-dose fit at a pass end (topic damage).
struct DamageEvent {
  DamageReport report;
  EnergyAxis axis;
  uint64_t tracked_stride = 0;
  uint64_t frame_number = 0;
  double time_s = 0.0;
};

enum class AdviceTrigger { kChange, kPass };

/// Advice per tile (topic advice): at each pass end, and when it changed at most every min_interval_s.
struct AdviceEvent {
  AdviceMap map;
  std::string tile_codes;         ///< one TileAdvice code per tile, row-major
  double dose_per_spectrum_e_per_A2 = 0.0;
  AdviceTrigger trigger = AdviceTrigger::kChange;
  uint32_t scan_pass = 0;         ///< kPass: the pass that ended
  uint64_t version = 0;           ///< per series, from 1
};

/// A scan pass's residual map (topic residual_map).
struct ResidualMapEvent {
  PassMap map;
  double novelty_threshold = 0.0;  ///< the deviance threshold in force (0: none)
};

/// The dose map of the same pass, after its residual map (topic dose, DoseMap).
struct DoseMapEvent {
  ScanShape shape;
  uint32_t scan_pass = 0;
  std::string closed_by;
  std::vector<double> position_dose_e_per_A2;  ///< height x width, row-major
  double run_dose_e_per_A2 = 0.0;
  double max_position_dose_e_per_A2 = 0.0;
  double dose_per_spectrum_e_per_A2 = 0.0;
  double dose_rate_e_per_A2_per_s = 0.0;
  DoseBudget budget;
  uint64_t positions_over_warning = 0;
  uint64_t positions_over_limit = 0;
  uint64_t spectra = 0;
  uint64_t spectra_without_dose = 0;
};

/// The rank of a new model version differs from the previous version's (topic model, RankChange).
struct RankChangeEvent {
  uint32_t old_rank = 0;
  uint32_t new_rank = 0;
  uint64_t model_version = 0;
  double spectra_seen = 0.0;
  double rank_threshold = 0.0;
  double noise_sigma = 0.0;
  bool auto_rank = false;
  double rank_hysteresis = 0.0;
  uint32_t first_index = 0;
  std::vector<double> singular_values;  ///< from first_index
};

/// A new model version, computed by Learn and installed by Install (under denoised_payload: scores its snapshot is
/// published before any message that uses it).
struct ModelVersionEvent {
  std::shared_ptr<const PcaModel> model;
};

/// A model snapshot is to be published now (topic snapshot): at a series end, after its last frame was learnt.
struct SnapshotDueEvent {
  std::string reason;  ///< "series_end"
  std::shared_ptr<const PcaModel> model;
};

/// Something an operator should read in the log (no message on the wire).
struct Notice {
  enum class Level { kDebug, kInfo, kWarn, kError };
  Level level = Level::kInfo;
  std::string text;
};

using SessionEvent = std::variant<DenoisedFrameEvent, CalibrationEvent, NoveltyEvent, RegionEvent, DriftEvent,
                                  DoseAlarmEvent, DamageEvent, AdviceEvent, ResidualMapEvent, DoseMapEvent,
                                  RankChangeEvent, ModelVersionEvent, SnapshotDueEvent, Notice>;

/// An event and the series it belongs to (a series start closes the previous series' map first).
struct SeriesEvent {
  std::string series_id;
  SessionEvent event;
};

}  // namespace specwatch
