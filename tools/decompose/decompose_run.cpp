#include "tools/decompose/decompose_run.hpp"

#include "operators/model/streaming_model.hpp"
#include "tools/sim/simulator.hpp"

#include <Eigen/Eigenvalues>
#include <Eigen/QR>
#include <Eigen/SVD>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <latch>
#include <numbers>
#include <thread>
#include <variant>

namespace specwatch::tools {
namespace {

using Clock = std::chrono::steady_clock;
constexpr Eigen::Index kBatchBlockSpectra = 512;  // spectra per rank update of the batch covariance

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

Eigen::Index FrameCount(Eigen::Index spectra, int frame_spectra) {
  return (spectra + frame_spectra - 1) / frame_spectra;
}

// Spectra [frame * frame_spectra, ...) of the frame, as a view.
auto FrameView(const CountsMatrix& counts, Eigen::Index frame, int frame_spectra) {
  const Eigen::Index first = frame * frame_spectra;
  return counts.middleCols(first, std::min<Eigen::Index>(frame_spectra, counts.cols() - first));
}

void LearnSpectra(StreamingModel& model, const CountsMatrix& counts, Eigen::Index spectra, int frame_spectra) {
  for (Eigen::Index f = 0; f < FrameCount(spectra, frame_spectra); ++f) {
    const Eigen::Index first = f * frame_spectra;
    model.Add(counts.middleCols(first, std::min<Eigen::Index>(frame_spectra, spectra - first)));
  }
  model.Flush();
}

// Denoises frames [first, last) into `out` (reused).
void DenoiseFrames(const PcaModel& model, const CountsMatrix& counts, int frame_spectra, Eigen::Index first,
                   Eigen::Index last, DenoiseResult& out) {
  for (Eigen::Index f = first; f < last; ++f) Denoise(model, FrameView(counts, f, frame_spectra), &out);
}

double DenoiseOnce(const PcaModel& model, const CountsMatrix& counts, int frame_spectra, int threads) {
  const Eigen::Index frames = FrameCount(counts.cols(), frame_spectra);
  std::latch ready(threads);
  std::latch go(1);
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    const Eigen::Index first = frames * t / threads, last = frames * (t + 1) / threads;
    workers.emplace_back([&, first, last] {
      DenoiseResult out;
      if (first < last) DenoiseFrames(model, counts, frame_spectra, first, first + 1, out);  // sizes `out`
      ready.count_down();
      go.wait();
      DenoiseFrames(model, counts, frame_spectra, first, last, out);
    });
  }
  ready.wait();
  const Clock::time_point start = Clock::now();
  go.count_down();
  for (std::thread& w : workers) w.join();
  return SecondsSince(start);
}

// One pipelined run (TimePipelined): this thread learns, a second one denoises behind it.
double PipelinedOnce(const CountsMatrix& counts, const ModelSettings& settings) {
  StreamingModel model(static_cast<int>(counts.rows()), settings.subspace, settings.weighting);
  const int frame_spectra = settings.frame_spectra;
  const Eigen::Index frames = FrameCount(counts.cols(), frame_spectra);
  std::atomic<Eigen::Index> learnt{0};  // frames the model has learnt
  std::latch go(1);
  std::thread denoiser([&] {
    DenoiseResult out;
    go.wait();
    for (Eigen::Index f = 0; f < frames; ++f) {
      // Frame f with the newest model that has learnt every frame before it, as the service orders them. The
      // wait polls: a futex wait would make the update thread pay a wake-up system call per frame (5% of the
      // update in a VM), and each thread has a core of its own here.
      while (learnt.load(std::memory_order_acquire) < f) std::this_thread::yield();
      const std::shared_ptr<const PcaModel> current = model.Model();
      Denoise(*current, FrameView(counts, f, frame_spectra), &out);
    }
  });
  const Clock::time_point start = Clock::now();
  go.count_down();
  for (Eigen::Index f = 0; f < frames; ++f) {
    model.Add(FrameView(counts, f, frame_spectra));
    learnt.store(f + 1, std::memory_order_release);
  }
  model.Flush();
  denoiser.join();
  return SecondsSince(start);
}

// x̃ = x / sqrt(a_i b_j) in double for spectra [first, first + m), or x as it is for an unweighted model.
Eigen::MatrixXd WeightedBlock(const PcaModel& model, const CountsMatrix& counts, Eigen::Index first,
                              Eigen::Index m) {
  Eigen::MatrixXd x = counts.middleCols(first, m).cast<double>();
  if (!model.Weighted()) return x;
  const Eigen::ArrayXd inverse_scale = 1.0 / model.channel_scale.cast<double>().array();
  for (Eigen::Index i = 0; i < m; ++i) {
    const double total = std::max(1.0, x.col(i).sum());
    x.col(i).array() *= inverse_scale / std::sqrt(total);
  }
  return x;
}

Eigen::VectorXd BatchMean(const PcaModel& model, const CountsMatrix& counts) {
  Eigen::VectorXd sum = Eigen::VectorXd::Zero(counts.rows());
  for (Eigen::Index first = 0; first < counts.cols(); first += kBatchBlockSpectra) {
    const Eigen::Index m = std::min(kBatchBlockSpectra, counts.cols() - first);
    sum += WeightedBlock(model, counts, first, m).rowwise().sum();
  }
  return sum / static_cast<double>(counts.cols());
}

// Σ (x̃ − mean)(x̃ − mean)ᵀ, lower triangle filled.
Eigen::MatrixXd BatchCovariance(const PcaModel& model, const CountsMatrix& counts, const Eigen::VectorXd& mean) {
  Eigen::MatrixXd covariance = Eigen::MatrixXd::Zero(counts.rows(), counts.rows());
  for (Eigen::Index first = 0; first < counts.cols(); first += kBatchBlockSpectra) {
    const Eigen::Index m = std::min(kBatchBlockSpectra, counts.cols() - first);
    Eigen::MatrixXd block = WeightedBlock(model, counts, first, m);
    block.colwise() -= mean;
    covariance.selfadjointView<Eigen::Lower>().rankUpdate(block);
  }
  return covariance;
}

double MaxAngleDeg(const Eigen::VectorXd& cosines) {
  const double c = std::clamp(cosines.minCoeff(), -1.0, 1.0);
  return std::acos(c) * 180.0 / std::numbers::pi;
}

// Cosines of the principal angles between the column spans of two orthonormal D x k matrices.
Eigen::VectorXd AngleCosines(const Eigen::MatrixXd& a, const Eigen::MatrixXd& b) {
  return Eigen::JacobiSVD<Eigen::MatrixXd>(a.transpose() * b).singularValues();
}

Eigen::MatrixXd Orthonormal(const Eigen::MatrixXd& columns) {
  Eigen::HouseholderQR<Eigen::MatrixXd> qr(columns);
  return qr.householderQ() * Eigen::MatrixXd::Identity(columns.rows(), columns.cols());
}

}  // namespace

double Median(std::vector<double> values) {
  if (values.empty()) return 0.0;
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  return n % 2 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

CountsMatrix SimulateCounts(const sim::SimOptions& options) {
  const sim::Simulator simulator(options);
  CountsMatrix counts(simulator.Channels(), static_cast<Eigen::Index>(simulator.SpectrumCount()));
  sim::FrameWorkspace workspace;
  std::vector<std::byte> bytes;
  for (uint64_t k = 0; k < simulator.FrameCount(); ++k) {
    const sim::FrameInfo frame = simulator.Frame(k);
    bytes.resize(simulator.PayloadBytes(frame.spectrum_count));
    simulator.GenerateFrame(k, workspace, bytes);
    const Eigen::Map<const Eigen::Matrix<uint16_t, Eigen::Dynamic, Eigen::Dynamic>> payload(
        reinterpret_cast<const uint16_t*>(bytes.data()), simulator.Channels(), frame.spectrum_count);
    counts.middleCols(static_cast<Eigen::Index>(frame.start_index), frame.spectrum_count) = payload.cast<float>();
  }
  return counts;
}

LearnResult LearnAll(const CountsMatrix& counts, const ModelSettings& settings, int repeat, int warmup_spectra) {
  const int channels = static_cast<int>(counts.rows());
  if (warmup_spectra > 0) {
    StreamingModel warmup(channels, settings.subspace, settings.weighting);
    LearnSpectra(warmup, counts, std::min<Eigen::Index>(warmup_spectra, counts.cols()), settings.frame_spectra);
  }
  LearnResult result;
  for (int r = 0; r < repeat; ++r) {
    StreamingModel model(channels, settings.subspace, settings.weighting);
    const Clock::time_point start = Clock::now();
    LearnSpectra(model, counts, counts.cols(), settings.frame_spectra);
    result.seconds.push_back(SecondsSince(start));
    result.model = model.Model();
    result.rejected_blocks = model.rejected_blocks();
  }
  return result;
}

std::vector<double> TimeDenoise(const PcaModel& model, const CountsMatrix& counts, int frame_spectra, int threads,
                                int repeat, int warmup_spectra) {
  if (warmup_spectra > 0) {
    DenoiseResult out;
    const Eigen::Index spectra = std::min<Eigen::Index>(warmup_spectra, counts.cols());
    DenoiseFrames(model, counts, frame_spectra, 0, FrameCount(spectra, frame_spectra), out);
  }
  std::vector<double> seconds;
  for (int r = 0; r < repeat; ++r) seconds.push_back(DenoiseOnce(model, counts, frame_spectra, threads));
  return seconds;
}

std::vector<double> TimePipelined(const CountsMatrix& counts, const ModelSettings& settings, int repeat) {
  std::vector<double> seconds;
  for (int r = 0; r < repeat; ++r) seconds.push_back(PipelinedOnce(counts, settings));
  return seconds;
}

SessionRun RunSession(const CountsMatrix& counts, const SessionOptions& options, int frame_spectra, ScanShape scan,
                      Modality modality, bool integer_counts) {
  const Clock::time_point start = Clock::now();
  Session session(options);
  SessionRun run;
  const Eigen::Index frames = FrameCount(counts.cols(), frame_spectra);
  auto batch_of = [&](Eigen::Index f) {
    auto b = std::make_shared<SpectrumBatch>();
    b->meta.series_id = "decompose";
    b->meta.frame_number = static_cast<uint64_t>(f);
    b->meta.receive_index = static_cast<uint64_t>(f);
    b->meta.modality = modality;
    b->meta.scan_shape = scan;
    b->meta.integer_counts = integer_counts;
    b->counts = FrameView(counts, f, frame_spectra);
    b->positions.resize(static_cast<size_t>(b->counts.cols()));
    const uint64_t positions = scan.Positions();
    for (Eigen::Index i = 0; i < b->counts.cols(); ++i) {
      const uint64_t k = static_cast<uint64_t>(f * frame_spectra + i);
      if (positions > 0) {
        const uint64_t p = k % positions;
        b->positions[static_cast<size_t>(i)] = ScanPosition{static_cast<uint32_t>(p % scan.width),
                                                            static_cast<uint32_t>(p / scan.width),
                                                            static_cast<uint32_t>(k / positions)};
      } else {
        b->positions[static_cast<size_t>(i)] = ScanPosition{static_cast<uint32_t>(k), 0, 0};
      }
    }
    return BatchPtr(std::move(b));
  };
  auto count = [&run](const std::vector<SeriesEvent>& events) {
    for (const SeriesEvent& e : events) {
      if (std::holds_alternative<NoveltyEvent>(e.event)) ++run.novelty_events;
      if (std::holds_alternative<RegionEvent>(e.event)) ++run.regions;
      if (std::holds_alternative<ResidualMapEvent>(e.event)) ++run.residual_maps;
      if (std::holds_alternative<RankChangeEvent>(e.event)) ++run.rank_changes;
      if (const auto* d = std::get_if<DriftEvent>(&e.event)) {
        auto it = std::find_if(run.drift_events.begin(), run.drift_events.end(),
                               [&](const auto& k) { return k.first == d->report.kind; });
        if (it == run.drift_events.end()) {
          run.drift_events.emplace_back(d->report.kind, 1);
        } else {
          ++it->second;
        }
      }
    }
  };
  run.learnt.assign(static_cast<size_t>(counts.cols()), 0);
  auto learn = [&](const std::vector<ModelWork>& work) {
    for (const ModelWork& w : work) {
      if (w.kind == ModelWork::Kind::kFrame && w.learn) {
        const size_t first = static_cast<size_t>(w.frame_number) * static_cast<size_t>(frame_spectra);
        for (size_t i = 0; i < w.Spectra(); ++i) run.learnt[first + i] = w.learn_mask ? (*w.learn_mask)[i] : 1;
      }
      ModelStep m = session.Learn(w);
      count(m.events);
      run.spectra_learnt += m.spectra_learnt;
      run.spectra_excluded += m.spectra_excluded;
      session.Install(m);
    }
  };
  for (Eigen::Index f = 0; f < frames; ++f) {
    const BatchPtr b = batch_of(f);
    const SessionStep step = session.Consume(b, session.Score(*b), 0.0);
    run.novel_spectra += step.novel_spectra;
    count(step.events);
    learn(step.model_work);
  }
  const SessionStep end = session.EndSeries(SeriesEndInfo{"decompose", static_cast<uint64_t>(frames),
                                                          static_cast<uint64_t>(counts.cols())});
  count(end.events);
  learn(end.model_work);
  run.model = session.Model();
  run.status = session.Status();
  run.denoised.resize(counts.rows(), counts.cols());
  for (Eigen::Index f = 0; f < frames; ++f) {
    const BatchPtr b = batch_of(f);
    run.denoised.middleCols(f * frame_spectra, b->counts.cols()) = session.Score(*b)->result.denoised;
  }
  run.seconds = SecondsSince(start);
  return run;
}

CountsMatrix SelectSpectra(const CountsMatrix& counts, const std::vector<uint8_t>& keep) {
  CountsMatrix out(counts.rows(), std::count(keep.begin(), keep.end(), uint8_t{1}));
  Eigen::Index n = 0;
  for (Eigen::Index i = 0; i < counts.cols(); ++i) {
    if (keep[static_cast<size_t>(i)]) out.col(n++) = counts.col(i);
  }
  return out;
}

BatchCheck CheckAgainstBatch(const PcaModel& model, const CountsMatrix& counts) {
  BatchCheck check;
  const Clock::time_point start = Clock::now();
  const Eigen::MatrixXd covariance = BatchCovariance(model, counts, BatchMean(model, counts));
  const Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> eigen(covariance);  // reads the lower triangle
  check.seconds = SecondsSince(start);
  const Eigen::Index d = counts.rows();
  const Eigen::Index k_max = std::min<Eigen::Index>(d, model.basis.cols());
  // Eigenvalues come increasing: the largest are the last columns.
  const Eigen::MatrixXd batch_basis = eigen.eigenvectors().rightCols(k_max).rowwise().reverse();
  check.singular_values = eigen.eigenvalues().tail(k_max).reverse().cwiseMax(0.0).cwiseSqrt();
  const Eigen::Index rank = std::min<Eigen::Index>(model.rank, model.basis.cols());
  for (Eigen::Index k = 1; k <= rank; ++k) {
    const Eigen::MatrixXd streaming = Orthonormal(model.basis.leftCols(k).cast<double>());
    const Eigen::VectorXd cosines = AngleCosines(batch_basis.leftCols(k), streaming);
    check.max_angle_deg_by_rank.push_back(MaxAngleDeg(cosines));
    if (k == rank) {
      for (Eigen::Index i = 0; i < cosines.size(); ++i) {  // cosines decrease: angles increase
        check.principal_angles_deg.push_back(std::acos(std::clamp(cosines(i), -1.0, 1.0)) * 180.0 / std::numbers::pi);
      }
    }
  }
  return check;
}

}  // namespace specwatch::tools
