#pragma once
/// Operando monitoring of one spectrum stream (docs/science.md §6–§7): what happens to every denoised frame,
/// in frame order, after the model has reconstructed it.
///
///   novelty   NoveltyDetector flags spectra whose standardised Poisson deviance (or Hotelling T²) passes a
///             threshold learnt from a nominal calibration window for the configured false-alarm rate; until
///             then (and after a rank change) OutlierGuard's provisional threshold for the same rate does, on the
///             deviance. Novel spectra are never learnt by the model nor used to calibrate. What passes the
///             threshold in force commonly (the guard's release rules) is not novel but a phase the model has yet
///             to learn: learnt (MonitorOutput::released) — while calibrating, and on a first visit of the scan
///             (pass 0) while monitoring. Adjacent novel positions form
///             regions (NoveltyRegions); a novelty event is reported for the first spectrum of a new region only,
///             so a revisited inclusion or a growing phase does not flood the client; regions report their growth.
///   new phase When novelty persists over regime_fraction of the recent spectra the sample changed: one drift
///             event of kind "new_phase"; the model then learns everything for absorb_spectra, and the thresholds
///             are learnt anew.
///   energy    EnergyShiftTracker follows the reference feature's sub-channel position; a confirmed step is a
///             drift event of kind "energy"; with correction on, the caller shifts the model by it (the counts
///             are never interpolated) and the tracker measures from the corrected position.
///   statistics A CUSUM on block means of the novelty score (clipped at its threshold) reports slow changes
///             of the nominal distribution (kind "statistics").
/// The subspace check (kind "subspace") needs the model update's thread and lives in SubspaceDriftTracker;
/// the monitor only says when its reference is to be taken (after each calibration).
///
/// Concurrency: stateful; one thread at a time, frames of one stream in order (a serial flow-graph stage).

#include "operators/monitor/change_detection.hpp"
#include "operators/model/denoiser.hpp"
#include "operators/monitor/energy_shift.hpp"
#include "operators/monitor/novelty_detector.hpp"
#include "operators/monitor/novelty_regions.hpp"
#include "operators/monitor/outlier_guard.hpp"
#include "operators/monitor/retrospective_buffer.hpp"
#include "operators/core/spectrum_batch.hpp"

#include <Eigen/Core>

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace specwatch {

enum class EnergyCorrection { kAuto, kOn, kOff };

struct MonitorOptions {
  bool novelty = true;                 ///< novelty detection (count data with a Poisson-weighted model)
  NoveltyOptions detector;
  int contributions = 8;               ///< channels listed per novelty event
  NoveltyRegionsOptions regions;
  /// The provisional threshold until the fitted ones exist, and the release rules (outlier_guard.hpp).
  OutlierGuardOptions guard;
  /// Spectra kept per pass and scored again with the pass-end model (retrospective_buffer.hpp; the Session's).
  RetrospectiveOptions retrospective;
  bool energy = true;                  ///< energy-axis tracking
  EnergyCorrection energy_correction = EnergyCorrection::kAuto;  ///< kAuto: on for EELS with 0 eV in range
  EnergyShiftOptions energy_shift;
  bool statistics = true;              ///< CUSUM on the novelty score
  /// Novelty calibration and the energy reference wait until the model has learnt this many spectra: a young
  /// model's rank and weights still change, and with them the scores' distribution.
  double min_model_spectra = 8192;
  /// k = 2 block-mean sd (0.125 sd of the score at 256 spectra per block): it reports shifts of the novelty score
  /// of about a quarter of its sd and more. At k = 0.5 a stationary stream whose model keeps learning gave a few
  /// events per 10^6 spectra for mean shifts of 0.06 sd, real but of no consequence.
  BlockCusumOptions cusum = [] {
    BlockCusumOptions o;
    o.k_sd = 2.0;
    return o;
  }();
  /// Throws ConfigError naming the field ("detector.false_alarm_rate ...", "contributions ..."; operators/core/config_error.hpp).
  void Validate() const;
};

/// Scan positions x_min <= x <= x_max, y_min <= y <= y_max, any pass.
struct ScanRect {
  uint32_t x_min = 0, y_min = 0, x_max = 0, y_max = 0;
  bool Contains(const ScanPosition& p) const { return p.x >= x_min && p.x <= x_max && p.y >= y_min && p.y <= y_max; }
};

/// What the series is: set at its start.
struct MonitorSeries {
  int channels = 0;
  Modality modality = Modality::kOther;
  EnergyAxis energy_axis;
  ScanShape scan_shape;
};

/// One frame after denoising.
struct MonitorFrame {
  uint64_t frame_number = 0;
  double acquisition_time_s = 0.0;
  std::span<const ScanPosition> positions;
  Eigen::Ref<const CountsMatrix> counts;        ///< D x m raw counts
  const DenoiseResult* result = nullptr;        ///< its reconstruction
  /// Reconstructed by a warm Poisson-weighted model with rank > 0: deviance_z and hotelling_t2 are scores.
  bool scored = false;
  uint64_t model_version = 0;
  int rank = 0;
  std::shared_ptr<const PcaModel> model;  ///< the model that reconstructed the frame (null: none)
  const Eigen::VectorXd* summed_counts = nullptr;  ///< per channel sum over the frame's spectra; null: none
};

struct ChannelShare {
  int channel = 0;
  double energy = 0.0;
  double excess_deviance = 0.0;
  float counts = 0.0f;
  float expected = 0.0f;
};

/// The first novel spectrum of a new region.
struct NoveltyHit {
  uint32_t spectrum = 0;       ///< index within the frame
  ScanPosition position;
  bool by_deviance = false;
  bool by_hotelling = false;
  double deviance_z = 0.0;
  double hotelling_t2 = 0.0;
  double tail_probability = 1.0;
  double deviance_threshold = 0.0;  ///< the threshold on deviance_z it was judged by (the provisional one, a fit's)
  uint32_t region_id = 0;
  std::vector<ChannelShare> contributions;
};

struct DriftReport {
  std::string kind;            ///< "energy", "statistics", "new_phase" (and "subspace" from SubspaceDriftTracker)
  double magnitude = 0.0;
  std::string unit;            ///< "channels", "score_sd", "fraction", "degrees"
  double confidence = 0.0;
  uint64_t onset_spectrum = 0;
  uint64_t detected_spectrum = 0;
  double shift_channels = 0.0;        ///< energy
  double total_shift_channels = 0.0;  ///< energy
  bool corrected = false;             ///< energy: the caller is to shift the model by shift_channels
};

struct CalibrationReport {
  std::string state;   ///< "calibrating", "monitoring", "absorbing"
  std::string reason;  ///< "series_start", "model_reset", "request", "regime_change", "complete"
};

struct MonitorOutput {
  /// Per spectrum: 1 = the model may learn it (not novel, not excluded while calibrating).
  std::vector<uint8_t> learn;
  std::vector<uint8_t> novel;  ///< per spectrum: flagged
  /// Per spectrum: above the threshold in force but let through as common (a phase the model has yet to learn):
  /// learnt, not flagged, and not a retrospective candidate.
  std::vector<uint8_t> released;
  uint32_t novel_count = 0;
  std::vector<NoveltyHit> events;
  std::vector<NoveltyRegion> regions;  ///< created, grown or merged by this frame
  std::vector<RegionMerge> merges;     ///< regions absorbed by this frame
  std::vector<DriftReport> drifts;
  std::vector<CalibrationReport> calibrations;
  /// Shift the model by this many channels (energy correction) before it learns this frame; 0 = none.
  double shift_model_channels = 0.0;
  /// The thresholds were learnt by this frame: take the subspace reference from the model after it.
  bool take_subspace_reference = false;
  /// A new phase was reported: the subspace reference is dropped until the thresholds are learnt anew (the model
  /// learning the new phase turns its basis, a change already reported).
  bool drop_subspace_reference = false;
  void Clear();
};

/// A fitted deviance threshold more than this many times the guard's provisional one (the same quantile from
/// the recent scores) is not put in force: its calibration window was not nominal (ObserveDetector).
constexpr double kMaxFittedToProvisional = 1.5;

class OperandoMonitor {
 public:
  explicit OperandoMonitor(MonitorOptions options);

  /// A new series (or the first frame of one): forgets regions, the energy reference, the CUSUM, and
  /// recalibrates (the reference region of an earlier Recalibrate is dropped).
  void StartSeries(const MonitorSeries& series, MonitorOutput* out);
  /// The model was forgotten: its scores change meaning, so the thresholds are learnt anew.
  void ModelReset(MonitorOutput* out);
  /// Learn the thresholds anew from the next nominal spectra (only those in `reference` when given).
  void Recalibrate(std::optional<ScanRect> reference, const std::string& reason, MonitorOutput* out);
  /// Scores one frame; `out` is cleared first.
  void Observe(const MonitorFrame& frame, MonitorOutput* out);
  /// Retrospective scoring at a pass end (retrospective_buffer.hpp): spectra of the pass, not flagged live, scored
  /// again by the pass-end model (`r`: their reconstruction) against the deviance threshold in force now. Those
  /// above it are novel: out->novel[i] = 1, added to the regions, a hit in out->events when one starts a region
  /// (hit.spectrum = i, the column in `counts`). Nothing when no threshold is in force.
  /// `model` is the one that reconstructed them (for the contributions' floor; may be null).
  /// Neither the detector nor the guard sees these scores (they are not the live stream). `out` is cleared first.
  void Rescore(std::span<const ScanPosition> positions, std::span<const uint64_t> frame_numbers,
               const Eigen::Ref<const CountsMatrix>& counts,
               const DenoiseResult& r, const PcaModel* model, MonitorOutput* out);

  const MonitorOptions& options() const { return options_; }
  const MonitorSeries& series() const { return series_; }
  const NoveltyDetector& detector() const { return detector_; }
  const OutlierGuard& guard() const { return guard_; }
  /// The threshold on deviance_z in force: the fitted one while monitoring, the guard's provisional one while
  /// calibrating (once it exists); 0 when there is none (absorbing, too few scores yet, novelty off).
  double deviance_threshold() const;
  /// The threshold on Hotelling T² in force: only fitted ones (0 otherwise; the provisional screen is z only).
  double hotelling_threshold() const;
  const EnergyShiftTracker* energy() const { return energy_ ? &*energy_ : nullptr; }
  /// The series' energy-axis shift so far, corrections included (0 before the tracker has a reference).
  double total_shift_channels() const {
    return energy_offset_channels_ + (energy_ ? energy_->total_shift_channels() : 0.0);
  }
  bool energy_correction_on() const { return correct_energy_; }
  uint64_t spectra() const { return spectra_; }   ///< of the series so far
  uint64_t novel_spectra() const { return novel_total_; }  ///< since construction
  /// Fits refused since construction (kMaxFittedToProvisional): calibration started over, reason "not_nominal".
  uint64_t calibrations_rejected() const { return calibrations_rejected_; }
  std::optional<ScanRect> reference_region() const { return reference_; }

 private:
  void ObserveNovelty(const MonitorFrame& frame, MonitorOutput* out);
  /// The detector's part, once the model is mature (min_model_spectra): fitted thresholds, rank changes, regimes.
  void ObserveDetector(const MonitorFrame& frame, MonitorOutput* out);
  /// Spectrum i of the frame is novel: not learnt, counted, added to the regions; an event if it starts one.
  void Flag(const MonitorFrame& frame, size_t i, bool by_deviance, bool by_hotelling, double tail_probability,
            double deviance_threshold, MonitorOutput* out);
  /// What Flag and Rescore share: spectrum `column` of `counts` / `r`, at `position`, is novel.
  void AddNovel(const ScanPosition& position, uint32_t spectrum_index, uint64_t frame_number,
                const Eigen::Ref<const CountsMatrix>& counts, const DenoiseResult& r, Eigen::Index column,
                bool by_deviance, bool by_hotelling, double tail_probability, double deviance_threshold,
                const PcaModel* model, MonitorOutput* out);
  void TakeRegionChanges(MonitorOutput* out);
  void ObserveEnergy(const MonitorFrame& frame, MonitorOutput* out);
  void ObserveStatistics(const MonitorFrame& frame, MonitorOutput* out);
  void ReportCalibration(const std::string& reason, MonitorOutput* out);

  MonitorOptions options_;
  MonitorSeries series_;
  NoveltyDetector detector_;
  OutlierGuard guard_;
  NoveltyRegions regions_;
  std::optional<EnergyShiftTracker> energy_;
  bool correct_energy_ = false;
  // The model whose reconstruction of each frame is the energy tracker's composition-matched reference: the
  // first mature model of the series (taken anew after a new phase), never shifted (the tracker adds its own
  // corrections).
  std::shared_ptr<const PcaModel> energy_model_;
  double energy_offset_channels_ = 0;  // shift before the current reference model was taken
  DenoiseResult energy_workspace_;
  Eigen::MatrixXf frame_sum_;
  int last_rank_ = -1;
  BlockCusum cusum_;
  bool cusum_running_ = false;  // fed only while the detector monitors, with its threshold as the clip
  std::optional<ScanRect> reference_;
  uint64_t spectra_ = 0;       // of the series
  uint64_t novel_total_ = 0;
  uint64_t calibrations_rejected_ = 0;
  uint64_t detector_spectra_ = 0;  // spectra given to the detector since construction (its own count)
  std::vector<uint8_t> in_reference_;  // workspace
  std::vector<uint8_t> guarded_;       // workspace: per spectrum, held out by the guard
  std::vector<float> detector_z_;      // workspace: the scores the detector sees
  std::vector<NoveltyVerdict> verdicts_;  // workspace
};

}  // namespace specwatch
