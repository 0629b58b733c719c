// Snapshots of the model and back, snapshot files, and the checks on an initial model.
#include <doctest/doctest.h>

#include "operators/core/config_error.hpp"
#include "operators/model/streaming_model.hpp"
#include "server/model_snapshot.hpp"
#include "stream/recording.hpp"

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <random>

using namespace specwatch;
using namespace specwatch::server;

namespace {

constexpr int kChannels = 40;

/// A learnt model: Poisson mixtures of 3 line shapes, weighted or not; truncated to its rank like a snapshot.
std::shared_ptr<PcaModel> Learnt(bool weighted) {
  std::mt19937_64 gen(9);
  const Eigen::ArrayXd e = Eigen::ArrayXd::LinSpaced(kChannels, 0.0, 1.0);
  Eigen::MatrixXd shapes(kChannels, 3);
  for (int k = 0; k < 3; ++k) {
    shapes.col(k) = (1.0 + 5.0 * (-(e - 0.25 * (k + 1)).square() / 0.003).exp()).matrix();
    shapes.col(k) *= 1500.0 / shapes.col(k).sum();
  }
  std::uniform_real_distribution<double> u;
  Eigen::MatrixXf x(kChannels, 400);
  for (int i = 0; i < x.cols(); ++i) {
    Eigen::Vector3d w(u(gen), u(gen), u(gen));
    const Eigen::VectorXd mu = shapes * (w / w.sum());
    for (int j = 0; j < kChannels; ++j) x(j, i) = static_cast<float>(std::poisson_distribution<int>(mu(j))(gen));
  }
  SubspaceOptions so;
  so.rank = 3;
  so.oversample = 4;
  WeightingOptions wo;
  wo.enabled = weighted;
  wo.calibration_spectra = 64;
  StreamingModel model(kChannels, so, wo);
  model.Add(x);
  model.Flush();
  auto m = std::make_shared<PcaModel>(*model.Model());
  m->basis = m->basis.leftCols(m->rank).eval();
  m->singular_values = m->singular_values.head(m->rank).eval();
  return m;
}

std::span<const std::byte> Bytes(const std::vector<float>& v) { return std::as_bytes(std::span(v)); }

std::string TempPath() {
  char name[] = "/tmp/specwatch_snapshot_XXXXXX";
  const int fd = mkstemp(name);
  REQUIRE(fd >= 0);
  close(fd);
  return name;
}

}  // namespace

TEST_CASE("a snapshot gives the model back: mean, basis in the weighted space, channel_scale, counters") {
  for (bool weighted : {true, false}) {
    CAPTURE(weighted);
    const auto model = Learnt(weighted);
    REQUIRE(model->Weighted() == weighted);
    wire::ModelSnapshot s;
    const auto payload = FillSnapshot(*model, "request", EnergyAxis{0.1, 0.02, "keV"}, &s);
    CHECK(s.poisson_weighted() == weighted);
    CHECK(s.channel_scale_size() == (weighted ? kChannels : 0));
    CHECK(s.total_variance() == model->total_variance);
    REQUIRE(payload->size() == static_cast<size_t>((1 + model->rank) * kChannels));
    if (weighted) {  // the payload is in counts: mean · sqrt(b)
      CHECK((*payload)[3] == doctest::Approx(model->mean(3) * model->channel_scale(3)));
    }
    const PcaModel back = ModelFromSnapshot(s, Bytes(*payload));
    CHECK(back.rank == model->rank);
    CHECK(back.version == model->version);
    CHECK(back.spectra_seen == model->spectra_seen);
    CHECK(back.total_variance == model->total_variance);
    CHECK(back.noise_sigma == model->noise_sigma);
    CHECK(back.Weighted() == weighted);
    CHECK((back.mean - model->mean).norm() <= 1e-6 * model->mean.norm());
    CHECK((back.basis - model->basis).norm() <= 1e-5);
    CHECK((back.singular_values - model->singular_values).norm() == 0.0);
    if (weighted) CHECK(back.channel_scale == model->channel_scale);
  }
}

TEST_CASE("a snapshot that cannot be a model is refused saying why") {
  const auto model = Learnt(true);
  wire::ModelSnapshot s;
  const auto payload = FillSnapshot(*model, "request", EnergyAxis{}, &s);
  {
    wire::ModelSnapshot no_scale = s;
    no_scale.clear_channel_scale();
    CHECK_THROWS_WITH_AS(ModelFromSnapshot(no_scale, Bytes(*payload)), doctest::Contains("without channel_scale"),
                         ConfigError);
  }
  {
    std::vector<float> short_payload(payload->begin(), payload->end() - 1);
    CHECK_THROWS_WITH_AS(ModelFromSnapshot(s, Bytes(short_payload)), doctest::Contains("payload of"), ConfigError);
  }
  {
    std::vector<float> stretched = *payload;
    for (size_t i = kChannels; i < 2 * kChannels; ++i) stretched[i] *= 2;  // first eigenspectrum not unit
    CHECK_THROWS_WITH_AS(ModelFromSnapshot(s, Bytes(stretched)), doctest::Contains("orthonormal"), ConfigError);
  }
  wire::ModelSnapshot empty;
  FillSnapshot(PcaModel{}, "shutdown", EnergyAxis{}, &empty);
  CHECK_THROWS_WITH_AS(ModelFromSnapshot(empty, {}), doctest::Contains("nothing was learnt"), ConfigError);
}

TEST_CASE("snapshot files: written whole, read back as the last snapshot of a recording") {
  const auto model = Learnt(true);
  wire::Envelope env;
  env.set_series_id("run-7");
  const auto payload = FillSnapshot(*model, "save", EnergyAxis{0.1, 0.02, "keV"}, env.mutable_snapshot());
  const std::string path = TempPath();
  WriteSnapshotFile(path, env, *payload);
  SnapshotRecord r = ReadSnapshotFile(path);
  CHECK(r.envelope.series_id() == "run-7");
  CHECK(r.envelope.snapshot().model_version() == model->version);
  CHECK(r.payload.size() == payload->size() * sizeof(float));

  // A tap recording with other topics around two snapshots: the last snapshot is the one taken.
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    wire::Envelope older = env;
    older.mutable_snapshot()->set_model_version(1);
    std::string a, b;
    older.SerializeToString(&a);
    env.SerializeToString(&b);
    const std::string_view p(reinterpret_cast<const char*>(payload->data()), payload->size() * sizeof(float));
    const std::string_view status[] = {"status", "x"};
    const std::string_view first[] = {"snapshot", a, p};
    const std::string_view denoised[] = {"denoised", "y", "zzzz"};
    const std::string_view second[] = {"snapshot", b, p};
    for (auto parts : {std::span<const std::string_view>(status), std::span<const std::string_view>(first),
                       std::span<const std::string_view>(denoised), std::span<const std::string_view>(second),
                       std::span<const std::string_view>(status)}) {
      stream::WriteRecord(out, parts);
    }
  }
  r = ReadSnapshotFile(path);
  CHECK(r.envelope.snapshot().model_version() == model->version);

  {  // cut inside a message
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write("\x03\x00\x00\x00\x08\x00", 6);
  }
  CHECK_THROWS_WITH_AS(ReadSnapshotFile(path), doctest::Contains("ends inside"), ConfigError);
  std::remove(path.c_str());
  CHECK_THROWS_WITH_AS(ReadSnapshotFile(path), doctest::Contains("cannot read"), ConfigError);
  CHECK_THROWS_AS(WriteSnapshotFile("/nonexistent-dir/model.snap", env, *payload), std::runtime_error);
}

TEST_CASE("an initial model is checked against the options at start") {
  const auto model = Learnt(true);
  wire::Envelope env;
  const auto payload = FillSnapshot(*model, "save", EnergyAxis{0.1, 0.02, "keV"}, env.mutable_snapshot());
  ServiceOptions o;
  o.initial_model = TempPath();
  WriteSnapshotFile(o.initial_model, env, *payload);
  o.pca.rank = 3;
  o.pca.oversample = 4;
  const InitialModel initial = LoadInitialModel(o);
  REQUIRE(initial.model);
  CHECK(initial.model->version == model->version);
  CHECK(initial.energy_axis.dispersion == doctest::Approx(0.02));

  o.pca.rank = 2;
  CHECK_THROWS_WITH_AS(LoadInitialModel(o), doctest::Contains("above pca.rank"), ConfigError);
  o.pca.rank = 3;
  o.pca.oversample = 40;  // rank + oversample > 40 channels
  CHECK_THROWS_WITH_AS(LoadInitialModel(o), doctest::Contains("oversample"), ConfigError);
  o.pca.oversample = 4;
  o.weighting = Weighting::kNone;
  CHECK_THROWS_WITH_AS(LoadInitialModel(o), doctest::Contains("pca.weighting"), ConfigError);
  o.weighting = Weighting::kAuto;
  std::remove(o.initial_model.c_str());
  CHECK_THROWS_WITH_AS(LoadInitialModel(o), doctest::Contains("initial_model"), ConfigError);
}
