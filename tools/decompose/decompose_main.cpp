// specwatch-decompose: the operators offline on a data set; a JSON report on stdout (decompose_options.cpp has
// the command line). Thin: loading, the run and the report live in their own functions.
#include "operators/core/config_error.hpp"
#include "tools/decompose/decompose_options.hpp"
#include "tools/decompose/decompose_run.hpp"
#include "tools/decompose/npy_file.hpp"
#include "tools/sim/json_writer.hpp"

#include <cstdio>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

namespace specwatch::tools {
namespace {

struct Input {
  CountsMatrix counts;  // D x N
  std::vector<int64_t> shape;
  std::string dtype;
  uint64_t negative_values = 0;
  uint64_t inexact_values = 0;
};

struct Timings {
  LearnResult learn;
  std::vector<double> denoise_1_thread_s;
  std::vector<double> denoise_threads_s;  // empty when --threads 1
  std::vector<double> pipelined_s;        // update and denoise at once on 2 threads; empty when --threads 1
};

Input LoadInput(const DecomposeOptions& o) {
  Input in;
  if (o.simulate) {
    in.counts = SimulateCounts(o.sim);
    in.shape = {static_cast<int64_t>(in.counts.cols()), static_cast<int64_t>(in.counts.rows())};
    in.dtype = "uint16";
    return in;
  }
  NpySpectra npy = ReadNpySpectra(o.input_path);
  in.counts = std::move(npy.counts);
  in.shape = npy.shape;
  in.dtype = npy.dtype;
  in.negative_values = npy.negative_values;
  in.inexact_values = npy.inexact_values;
  if (in.negative_values > 0) {
    std::fprintf(stderr, "specwatch-decompose: warning: %llu negative values: not counts, Poisson weighting is"
                 " meaningless for them\n", static_cast<unsigned long long>(in.negative_values));
  }
  return in;
}

Timings RunTimed(const DecomposeOptions& o, const CountsMatrix& counts) {
  const ModelSettings settings{o.subspace, o.weighting, o.frame_spectra};
  Timings t;
  t.learn = LearnAll(counts, settings, o.repeat, o.warmup_spectra);
  const PcaModel& model = *t.learn.model;
  t.denoise_1_thread_s = TimeDenoise(model, counts, o.frame_spectra, 1, o.repeat, o.warmup_spectra);
  if (o.threads > 1) {
    t.denoise_threads_s = TimeDenoise(model, counts, o.frame_spectra, o.threads, o.repeat, 0);
    t.pipelined_s = TimePipelined(counts, settings, o.repeat);
  }
  return t;
}

void WriteModel(const std::string& path, const PcaModel& model) {
  const Eigen::Index d = model.mean.size(), k = model.basis.cols();
  const Eigen::VectorXf scale = model.Weighted() ? model.channel_scale : Eigen::VectorXf::Ones(d);
  const Eigen::VectorXf mean_counts = model.mean.cwiseProduct(scale);
  // Row-major k x D: row c is eigenspectrum c, as numpy reads a C-order (k, D) array.
  using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const RowMajor basis = model.basis.transpose();
  const RowMajor eigenspectra = (scale.asDiagonal() * model.basis).transpose();
  const int64_t rank = model.rank;
  const uint8_t weighted = model.Weighted() ? 1 : 0;
  auto f4 = [](const float* p, Eigen::Index n, std::vector<int64_t> shape) {
    return NpyBytes("<f4", shape, p, static_cast<size_t>(n) * sizeof(float));
  };
  auto f8 = [](double v) { return NpyBytes("<f8", {}, &v, sizeof v); };
  WriteNpz(path, {{"mean_counts", f4(mean_counts.data(), d, {d})},
                  {"eigenspectra_counts", f4(eigenspectra.data(), k * d, {k, d})},
                  {"singular_values", NpyBytes("<f8", {k}, model.singular_values.data(), k * sizeof(double))},
                  {"mean", f4(model.mean.data(), d, {d})},
                  {"basis", f4(basis.data(), k * d, {k, d})},
                  {"channel_scale", f4(scale.data(), d, {d})},
                  {"weighted", NpyBytes("|b1", {}, &weighted, 1)},
                  {"rank", NpyBytes("<i8", {}, &rank, sizeof rank)},
                  {"noise_sigma", f8(model.noise_sigma)},
                  {"rank_threshold", f8(model.rank_threshold)},
                  {"spectra_seen", f8(model.spectra_seen)}});
}

// The service's science options for an offline run: the service's defaults, with this tool's model settings.
// No warm-up: the denoised output is the final model's (every spectrum scored again after the series end).
SessionOptions SessionOptionsFor(const DecomposeOptions& o) {
  SessionOptions s;
  s.pca = o.subspace;
  s.weighting = o.weighting.enabled ? Weighting::kPoisson : Weighting::kNone;
  s.weighting_options = o.weighting;
  s.warmup_spectra = 0;
  return s;
}

// Where the spectra were on the scan: the simulator's scan, or the image's (H, W, D); else unknown.
ScanShape ScanOf(const DecomposeOptions& o, const Input& in) {
  if (o.simulate) return ScanShape{o.sim.scan_width, o.sim.scan_height};
  if (in.shape.size() == 3) return ScanShape{static_cast<uint32_t>(in.shape[1]), static_cast<uint32_t>(in.shape[0])};
  return ScanShape{};
}

void WriteOutputs(const DecomposeOptions& o, const Input& in, const SessionRun& run) {
  const int64_t n = in.counts.cols(), d = in.counts.rows();
  if (!o.write_model_path.empty()) WriteModel(o.write_model_path, *run.model);
  if (!o.write_denoised_path.empty()) {
    WriteNpy(o.write_denoised_path, "<f4", {n, d}, run.denoised.data(), run.denoised.size() * sizeof(float));
  }
  if (!o.write_data_path.empty()) {
    const Eigen::Matrix<uint16_t, Eigen::Dynamic, Eigen::Dynamic> counts = in.counts.cast<uint16_t>();
    WriteNpy(o.write_data_path, "<u2", {n, d}, counts.data(), counts.size() * sizeof(uint16_t));
  }
}

template <typename Vector>
void NumberList(sim::JsonWriter& json, const Vector& v, Eigen::Index count) {
  json.BeginArray();
  for (Eigen::Index i = 0; i < count; ++i) json.Number(static_cast<double>(v[i]));
  json.EndArray();
}

void ReportInput(sim::JsonWriter& json, const DecomposeOptions& o, const Input& in) {
  json.Key("input").BeginObject();
  json.Key("source").String(o.simulate ? "sim" : "file");
  if (!o.simulate) json.Key("path").String(o.input_path);
  json.Key("shape").NumberArray(in.shape);
  json.Key("dtype").String(in.dtype);
  if (o.simulate) {
    json.Key("modality").String(sim::ModalityName(o.sim.modality));
    json.Key("phases").Integer(o.sim.phases);
    json.Key("counts").Number(o.sim.mean_counts);
    json.Key("scan").String(std::to_string(o.sim.scan_width) + "x" + std::to_string(o.sim.scan_height));
    json.Key("passes").Integer(o.sim.passes);
    json.Key("inclusion").Number(o.sim.inclusion_fraction);
    json.Key("seed").Integer(static_cast<int64_t>(o.sim.seed));
  }
  json.Key("negative_values").Integer(static_cast<int64_t>(in.negative_values));
  json.Key("inexact_values").Integer(static_cast<int64_t>(in.inexact_values));
  json.EndObject();
  json.Key("spectra").Integer(in.counts.cols());
  json.Key("channels").Integer(in.counts.rows());
  json.Key("mean_counts_per_spectrum").Number(in.counts.cast<double>().sum() / static_cast<double>(in.counts.cols()));
}

void ReportOptions(sim::JsonWriter& json, const DecomposeOptions& o) {
  json.Key("options").BeginObject();
  json.Key("rank").Integer(o.subspace.rank);
  json.Key("oversample").Integer(o.subspace.oversample);
  json.Key("block").Integer(o.subspace.block);
  json.Key("forgetting").Number(o.subspace.forgetting);
  json.Key("auto_rank").Bool(o.subspace.auto_rank);
  json.Key("rank_min").Integer(o.subspace.rank_min);
  json.Key("weighting").String(o.weighting.enabled ? "poisson" : "none");
  json.Key("calibration_spectra").Integer(o.weighting.calibration_spectra);
  json.Key("frame_spectra").Integer(o.frame_spectra);
  json.Key("threads").Integer(o.threads);
  json.Key("repeat").Integer(o.repeat);
  json.Key("warmup_spectra").Integer(o.warmup_spectra);
  json.EndObject();
}

void ReportThroughput(sim::JsonWriter& json, const Timings& t, int threads, double spectra) {
  const double update_s = Median(t.learn.seconds);
  const double denoise_1_s = Median(t.denoise_1_thread_s);
  const double denoise_n_s = t.denoise_threads_s.empty() ? denoise_1_s : Median(t.denoise_threads_s);
  json.Key("threads").Integer(threads);
  json.Key("update_spectra_per_s").Number(spectra / update_s);
  json.Key("denoise_spectra_per_s").Number(spectra / denoise_1_s);
  json.Key("denoise_spectra_per_s_threads").Number(spectra / denoise_n_s);
  json.Key("combined_spectra_per_s").Number(spectra / (update_s + denoise_1_s));
  json.Key("combined_spectra_per_s_threads").Number(spectra / (update_s + denoise_n_s));
  if (!t.pipelined_s.empty()) json.Key("pipelined_spectra_per_s").Number(spectra / Median(t.pipelined_s));
  json.Key("seconds").BeginObject();
  json.Key("update").NumberArray(t.learn.seconds);
  json.Key("denoise_1_thread").NumberArray(t.denoise_1_thread_s);
  json.Key("denoise_threads").NumberArray(t.denoise_threads_s.empty() ? t.denoise_1_thread_s : t.denoise_threads_s);
  json.Key("pipelined").NumberArray(t.pipelined_s);
  json.EndObject();
}

void ReportModel(sim::JsonWriter& json, const PcaModel& model, uint64_t rejected_blocks) {
  json.Key("rank").Integer(model.rank);
  json.Key("components").Integer(model.basis.cols());
  json.Key("singular_values");
  NumberList(json, model.singular_values, model.singular_values.size());
  json.Key("explained_variance_ratio");
  const Eigen::VectorXd ratio = model.ExplainedVarianceRatio();
  NumberList(json, ratio, ratio.size());
  json.Key("noise_sigma").Number(model.noise_sigma);
  json.Key("rank_threshold").Number(model.rank_threshold);
  json.Key("spectra_seen").Number(model.spectra_seen);
  json.Key("updates").Integer(static_cast<int64_t>(model.version));
  json.Key("rejected_blocks").Integer(static_cast<int64_t>(rejected_blocks));
  json.Key("weighted").Bool(model.Weighted());
}

void ReportSession(sim::JsonWriter& json, const SessionRun& r) {
  json.Key("session").BeginObject();
  json.Key("seconds").Number(r.seconds);
  json.Key("spectra_learnt").Integer(static_cast<int64_t>(r.spectra_learnt));
  json.Key("spectra_excluded").Integer(static_cast<int64_t>(r.spectra_excluded));
  json.Key("novelty_state").String(r.status.novelty_state);
  json.Key("novelty_threshold").Number(r.status.novelty_threshold);
  json.Key("novel_spectra").Integer(static_cast<int64_t>(r.novel_spectra));
  json.Key("novelty_events").Integer(static_cast<int64_t>(r.novelty_events));
  json.Key("novelty_regions").Integer(static_cast<int64_t>(r.regions));
  json.Key("residual_maps").Integer(static_cast<int64_t>(r.residual_maps));
  json.Key("rank_changes").Integer(static_cast<int64_t>(r.rank_changes));
  json.Key("drift_events").BeginObject();
  for (const auto& [kind, n] : r.drift_events) json.Key(kind).Integer(static_cast<int64_t>(n));
  json.EndObject();
  json.EndObject();
}

void ReportBatch(sim::JsonWriter& json, const BatchCheck& b) {
  const auto& by_rank = b.max_angle_deg_by_rank;
  json.Key("batch_check").BeginObject();
  json.Key("max_principal_angle_deg").Number(by_rank.empty() ? 0.0 : by_rank.back());
  json.Key("max_angle_deg_by_rank").NumberArray(by_rank);
  json.Key("principal_angles_deg").NumberArray(b.principal_angles_deg);
  json.Key("singular_values");
  NumberList(json, b.singular_values, b.singular_values.size());
  json.Key("seconds").Number(b.seconds);
  json.EndObject();
}

int Run(const DecomposeOptions& o) {
  const Input in = LoadInput(o);
  try {
    o.subspace.Validate(static_cast<int>(in.counts.rows()));
  } catch (const ConfigError& e) {
    throw UsageError(std::string(e.what()) + " (the data have " + std::to_string(in.counts.rows()) + " channels)");
  }
  // The results: the stream through the service's Session. The throughput figures: the operators alone.
  const SessionRun run = RunSession(in.counts, SessionOptionsFor(o), o.frame_spectra, ScanOf(o, in),
                                    o.simulate ? o.sim.modality : Modality::kOther,
                                    in.dtype.find("int") != std::string::npos);
  const Timings t = RunTimed(o, in.counts);
  const PcaModel& model = *run.model;
  std::optional<BatchCheck> batch;
  // Against the batch SVD of the spectra the model learnt (the monitor holds some out, as in the service).
  if (o.check_batch) batch = CheckAgainstBatch(model, SelectSpectra(in.counts, run.learnt));
  WriteOutputs(o, in, run);
  sim::JsonWriter json(std::cout);
  json.BeginObject();
  ReportInput(json, o, in);
  ReportOptions(json, o);
  ReportThroughput(json, t, o.threads, static_cast<double>(in.counts.cols()));
  ReportModel(json, model, t.learn.rejected_blocks);
  ReportSession(json, run);
  if (batch) ReportBatch(json, *batch);
  json.EndObject();
  std::cout << '\n';
  return 0;
}

}  // namespace
}  // namespace specwatch::tools

int main(int argc, char** argv) {
  using namespace specwatch;
  const std::vector<std::string> args(argv + 1, argv + argc);
  try {
    const tools::DecomposeOptions options = tools::ParseDecomposeArgs(args);
    if (options.help) {
      std::cout << tools::DecomposeUsage();
      return 0;
    }
    return tools::Run(options);
  } catch (const tools::UsageError& e) {
    std::fprintf(stderr, "specwatch-decompose: %s\n", e.what());
    return 2;
  } catch (const sim::ConfigError& e) {
    std::fprintf(stderr, "specwatch-decompose: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "specwatch-decompose: %s\n", e.what());
    return 1;
  }
}
