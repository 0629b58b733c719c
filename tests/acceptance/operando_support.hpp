#pragma once
/// Issue 4's acceptance tests run the service's per-frame sequence in-process, on the simulator's frames:
///   denoise with the current model -> OperandoMonitor::Observe -> energy correction of the model ->
///   learn the spectra the monitor lets through -> subspace check.
/// The service (server/pipeline.cpp) does the same steps on three flow-graph nodes; here they run in one
/// thread, every frame learnt (model_updates: all).

#include "acceptance_support.hpp"
#include "operators/model/denoiser.hpp"
#include "operators/monitor/operando_monitor.hpp"
#include "operators/model/streaming_model.hpp"
#include "operators/monitor/subspace_drift.hpp"

#include <memory>
#include <string>
#include <vector>

namespace specwatch::acceptance {

struct OperandoConfig {
  MonitorOptions monitor;
  SubspaceOptions pca;
  WeightingOptions weighting;
  SubspaceDriftOptions subspace;
  uint64_t subspace_check_spectra = 1024;
  uint64_t warmup_spectra = 256;
  /// Learn only every `learn_every`-th frame (1: all), as the service's when_idle mode learns a subsample.
  uint64_t learn_every = 1;
  OperandoConfig() {
    pca.rank = 8;
    pca.auto_rank = true;
    weighting.enabled = true;
  }
};

/// Everything a run reported, and per spectrum whether it was flagged.
struct OperandoRecord {
  std::vector<NoveltyHit> events;
  std::vector<uint64_t> event_spectrum;      ///< series spectrum index of each event
  std::vector<DriftReport> drifts;           ///< in order; subspace ones included
  std::vector<uint8_t> novel;                ///< per spectrum of the series
  std::vector<uint8_t> monitored;            ///< per spectrum: the detector was monitoring when it came
  std::vector<float> z, t2;                  ///< per spectrum: deviance_z and Hotelling T² (0 unscored)
  uint64_t first_monitored_spectrum = UINT64_MAX;
  uint64_t regions_reported = 0;
  double total_shift_applied = 0;            ///< sum of the model shifts (energy correction)
  int DriftCount(const std::string& kind) const {
    int n = 0;
    for (const auto& d : drifts) n += d.kind == kind;
    return n;
  }
};

class OperandoLoop {
 public:
  OperandoLoop(const sim::SimOptions& sim, OperandoConfig config)
      : frames_(sim), config_(std::move(config)), monitor_(config_.monitor), subspace_(config_.subspace) {
    learner_ = std::make_unique<StreamingModel>(sim.channels, config_.pca, config_.weighting);
    MonitorSeries s;
    s.channels = sim.channels;
    s.modality = sim.modality;
    s.energy_axis = frames_.sim().Axis();
    s.scan_shape = ScanShape{sim.scan_width, sim.scan_height};
    monitor_.StartSeries(s, &out_);
  }

  SimFrames& frames() { return frames_; }
  int Rank() const { return learner_->Model()->rank; }
  const OperandoMonitor& monitor() const { return monitor_; }

  /// Runs frames [first, last) and appends to `record`.
  void Run(uint64_t first, uint64_t last, OperandoRecord* record) {
    static const PcaModel kNothingLearnt;
    for (uint64_t k = first; k < last; ++k) {
      const Eigen::MatrixXf counts = frames_.Frame(k);
      const sim::FrameInfo info = frames_.sim().Frame(k);
      std::vector<ScanPosition> positions(info.spectrum_count);
      for (uint32_t i = 0; i < info.spectrum_count; ++i) {
        const auto p = frames_.sim().Position(info.start_index + i);
        positions[i] = ScanPosition{p.x, p.y, p.pass};
      }
      const auto model = learner_->Model();
      const bool usable = learnt_ >= config_.warmup_spectra && model->spectra_seen > 0;
      Denoise(usable ? *model : kNothingLearnt, counts, &result_);
      Eigen::VectorXf sum = Eigen::VectorXf::Zero(counts.rows());
      for (Eigen::Index i = 0; i < counts.cols(); ++i) sum += counts.col(i);
      const Eigen::VectorXd summed = sum.cast<double>();
      MonitorFrame f{.frame_number = k,
                     .acquisition_time_s = 0.0,
                     .positions = positions,
                     .counts = counts,
                     .result = &result_,
                     .scored = usable && model->Weighted() && result_.scores.rows() > 0,
                     .model_version = model->version,
                     .rank = static_cast<int>(result_.scores.rows()),
                     .model = usable ? model : nullptr,
                     .summed_counts = &summed};
      const bool monitoring = monitor_.detector().state() == NoveltyState::kMonitoring;
      monitor_.Observe(f, &out_);
      const uint64_t base = info.start_index;
      record->novel.resize(base + counts.cols(), 0);
      record->monitored.resize(base + counts.cols(), 0);
      record->z.resize(base + counts.cols(), 0.0f);
      record->t2.resize(base + counts.cols(), 0.0f);
      for (Eigen::Index i = 0; i < counts.cols(); ++i) {
        record->novel[base + i] = out_.novel[i];
        record->monitored[base + i] = monitoring;
        if (f.scored) {
          record->z[base + i] = result_.deviance_z(i);
          record->t2[base + i] = result_.hotelling_t2(i);
        }
      }
      if (monitoring) record->first_monitored_spectrum = std::min(record->first_monitored_spectrum, base);
      for (const auto& e : out_.events) {
        record->events.push_back(e);
        record->event_spectrum.push_back(base + e.spectrum);
      }
      record->regions_reported += out_.regions.size();
      for (const auto& d : out_.drifts) record->drifts.push_back(d);
      if (out_.shift_model_channels != 0.0 && model->spectra_seen > 0) {
        learner_->ShiftChannels(out_.shift_model_channels);
        record->total_shift_applied += out_.shift_model_channels;
      }
      if (out_.drop_subspace_reference) subspace_.Reset();
      if (out_.take_subspace_reference || (out_.shift_model_channels != 0.0 && subspace_.has_reference())) {
        take_reference_ = true;
      }
      if (k % config_.learn_every == 0) Learn(counts);
      if (take_reference_) {
        const auto m = learner_->Model();
        if (const int r = ReferenceRank(*m, config_.subspace); r > 0) {
          subspace_.SetReference(m->basis, r);
          take_reference_ = false;
          since_check_ = 0;
        }
      } else if (subspace_.has_reference() && since_check_ >= config_.subspace_check_spectra) {
        since_check_ = 0;
        const auto m = learner_->Model();
        if (const auto e = subspace_.Check(m->basis.leftCols(m->rank), base)) {
          DriftReport d;
          d.kind = "subspace";
          d.magnitude = e->max_angle_deg;
          d.unit = "degrees";
          d.onset_spectrum = e->onset_spectra;
          d.detected_spectrum = e->detected_spectra;
          record->drifts.push_back(d);
        }
      }
    }
  }

 private:
  void Learn(const Eigen::MatrixXf& counts) {
    Eigen::MatrixXf kept(counts.rows(), counts.cols());
    Eigen::Index n = 0;
    for (Eigen::Index i = 0; i < counts.cols(); ++i) {
      if (out_.learn[static_cast<size_t>(i)]) kept.col(n++) = counts.col(i);
    }
    const uint64_t refreshes = learner_->weight_refreshes();
    if (n > 0) learner_->Add(kept.leftCols(n));
    // A weight refresh re-expresses the model: its basis turns with no physical change (as in the service).
    if (learner_->weight_refreshes() != refreshes && subspace_.has_reference()) take_reference_ = true;
    learnt_ += static_cast<uint64_t>(n);
    since_check_ += static_cast<uint64_t>(n);
  }

  SimFrames frames_;
  OperandoConfig config_;
  OperandoMonitor monitor_;
  SubspaceDriftTracker subspace_;
  std::unique_ptr<StreamingModel> learner_;
  DenoiseResult result_;
  MonitorOutput out_;
  uint64_t learnt_ = 0;
  uint64_t since_check_ = 0;
  bool take_reference_ = false;
};

}  // namespace specwatch::acceptance
