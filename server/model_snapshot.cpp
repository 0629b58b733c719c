#include "server/model_snapshot.hpp"

#include "operators/core/config_error.hpp"
#include "operators/model/streaming_model.hpp"
#include "stream/recording.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

namespace specwatch::server {
namespace {

std::string Str(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

// A snapshot's eigenspectra are float32 counts; divided by channel_scale they are unit vectors again to
// float rounding (~1e-6). Anything far off was not written by specwatch, or lost its channel_scale.
constexpr double kOrthonormalTolerance = 1e-3;

}  // namespace

PcaModel ModelFromSnapshot(const wire::ModelSnapshot& s, std::span<const std::byte> payload) {
  const Eigen::Index d = s.channel_count();
  const Eigen::Index r = s.rank();
  if (d == 0 || !(s.spectra_seen() > 0)) {
    throw ConfigError("the snapshot holds no model (nothing was learnt when it was taken)");
  }
  if (r > d) throw ConfigError("rank " + std::to_string(r) + " above the channel count " + std::to_string(d));
  const size_t expected = static_cast<size_t>((1 + r) * d) * sizeof(float);
  if (payload.size() != expected) {
    throw ConfigError("payload of " + std::to_string(payload.size()) + " bytes, expected (1 + rank " +
                      std::to_string(r) + ") x " + std::to_string(d) + " channels x 4 = " + std::to_string(expected));
  }
  if (s.singular_values_size() != r) {
    throw ConfigError(std::to_string(s.singular_values_size()) + " singular values for rank " + std::to_string(r));
  }
  Eigen::MatrixXf data(d, 1 + r);  // column 0 the mean, then the eigenspectra: the payload's C order
  std::memcpy(data.data(), payload.data(), payload.size());
  if (!data.allFinite()) throw ConfigError("the payload holds non-finite values");

  PcaModel m;
  m.mean = data.col(0);
  m.basis = data.rightCols(r);
  if (s.poisson_weighted()) {
    if (s.channel_scale_size() != d) {
      throw ConfigError(s.channel_scale_size() == 0
                            ? std::string("a Poisson-weighted snapshot without channel_scale (taken by an older "
                                          "specwatch): its weighted space cannot be recovered")
                            : std::to_string(s.channel_scale_size()) + " channel_scale entries for " +
                                  std::to_string(d) + " channels");
    }
    m.channel_scale = Eigen::Map<const Eigen::VectorXf>(s.channel_scale().data(), d);
    if (!m.channel_scale.allFinite() || (m.channel_scale.array() <= 0.0f).any()) {
      throw ConfigError("channel_scale must be finite and > 0");
    }
    m.mean.array() /= m.channel_scale.array();
    m.basis.array().colwise() /= m.channel_scale.array();
  } else if (s.channel_scale_size() != 0) {
    throw ConfigError("channel_scale given for a model that is not Poisson-weighted");
  }
  if (r > 0) {
    const Eigen::MatrixXd gram = (m.basis.transpose() * m.basis).cast<double>();
    const double error = (gram - Eigen::MatrixXd::Identity(r, r)).cwiseAbs().maxCoeff();
    if (error > kOrthonormalTolerance) {
      throw ConfigError("the eigenspectra are not orthonormal in the model's space (max |U'U - I| = " + Str(error) +
                        ")");
    }
  }
  m.singular_values = Eigen::Map<const Eigen::VectorXd>(s.singular_values().data(), r);
  for (Eigen::Index i = 0; i < r; ++i) {
    if (!(std::isfinite(m.singular_values[i]) && m.singular_values[i] >= 0) ||
        (i > 0 && m.singular_values[i] > m.singular_values[i - 1] * (1 + 1e-9))) {
      throw ConfigError("singular_values must be finite, >= 0 and decreasing");
    }
  }
  const double captured = m.singular_values.squaredNorm();
  double total = s.total_variance();
  if (!(total > 0) && s.explained_variance_size() > 0 && s.explained_variance(0) > 0 && r > 0) {
    total = m.singular_values[0] * m.singular_values[0] / s.explained_variance(0);  // older snapshots
  }
  m.total_variance = std::isfinite(total) ? std::max(total, captured) : captured;
  m.spectra_seen = s.spectra_seen();
  m.version = s.model_version();
  m.rank = static_cast<int>(r);
  m.noise_sigma = s.noise_sigma();
  m.rank_threshold = s.rank_threshold();
  m.effective_memory = s.effective_memory();
  return m;
}

SnapshotRecord ReadSnapshotFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError("cannot read " + path + ": " + std::strerror(errno));
  std::optional<std::vector<std::string>> last;
  try {
    stream::RecordReader reader(in);
    while (auto parts = reader.Next("snapshot")) last = std::move(parts);
  } catch (const std::runtime_error& e) {
    throw ConfigError(path + ": " + e.what() + " (a save_model file or a specwatch-tap recording is expected)");
  }
  if (!last) {
    throw ConfigError(path + ": no snapshot message in it (a save_model file or a specwatch-tap recording of the "
                      "snapshot topic is expected)");
  }
  SnapshotRecord record;
  if (last->size() < 2 || !record.envelope.ParseFromString((*last)[1]) ||
      record.envelope.body_case() != wire::Envelope::kSnapshot) {
    throw ConfigError(path + ": its last snapshot message does not hold a ModelSnapshot");
  }
  if (last->size() > 2) record.payload = std::move((*last)[2]);
  return record;
}

void WriteSnapshotFile(const std::string& path, const wire::Envelope& envelope, std::span<const float> payload) {
  const std::string temporary = path + ".part";
  const auto fail = [&](const std::string& what, int error) {
    std::remove(temporary.c_str());
    throw std::runtime_error(what + ": " + std::strerror(error));
  };
  {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    if (!out) fail("cannot write " + temporary, errno);
    std::string header;
    envelope.SerializeToString(&header);
    const std::string_view parts[] = {"snapshot", header,
                                      {reinterpret_cast<const char*>(payload.data()), payload.size_bytes()}};
    stream::WriteRecord(out, std::span(parts, payload.empty() ? 2 : 3));
    out.close();
    if (!out) fail("cannot write " + temporary, errno);
  }
  // On disk before it replaces the old file: a crash leaves the old model or the new one, never half of one.
  const int fd = ::open(temporary.c_str(), O_RDONLY);
  if (fd < 0 || ::fsync(fd) != 0) {
    const int error = errno;
    if (fd >= 0) ::close(fd);
    fail("cannot sync " + temporary, error);
  }
  ::close(fd);
  if (std::rename(temporary.c_str(), path.c_str()) != 0) fail("cannot replace " + path, errno);
}

InitialModel LoadInitialModel(const ServiceOptions& o) {
  InitialModel initial;
  initial.path = o.initial_model;
  SnapshotRecord record;
  try {
    record = ReadSnapshotFile(o.initial_model);
  } catch (const ConfigError& e) {
    throw ConfigError(std::string("initial_model: ") + e.what());
  }
  const std::string where = "initial_model " + o.initial_model + ": ";
  try {
    const auto& s = record.envelope.snapshot();
    auto model = std::make_shared<PcaModel>(
        ModelFromSnapshot(s, std::as_bytes(std::span(record.payload.data(), record.payload.size()))));
    const int channels = static_cast<int>(model->mean.size());
    o.pca.Validate(channels);
    if (model->rank > o.pca.rank) {
      throw ConfigError("rank " + std::to_string(model->rank) + " is above pca.rank " + std::to_string(o.pca.rank) +
                        ": raise pca.rank or save a model of lower rank");
    }
    if (model->Weighted() && o.weighting == Weighting::kNone) {
      throw ConfigError("the model is Poisson-weighted but pca.weighting is \"none\"");
    }
    if (!model->Weighted() && o.weighting == Weighting::kPoisson) {
      throw ConfigError("the model is not Poisson-weighted but pca.weighting is \"poisson\"");
    }
    WeightingOptions weighting = o.weighting_options;
    weighting.enabled = model->Weighted();
    StreamingModel probe(channels, o.pca, weighting);
    probe.Restore(*model);  // the checks the pipeline's restore will make
    initial.model = std::move(model);
    const auto& axis = s.energy_axis();
    initial.energy_axis = EnergyAxis{axis.offset(), axis.dispersion() > 0 ? axis.dispersion() : 1.0, axis.unit()};
    initial.series_id = record.envelope.series_id();
  } catch (const ConfigError& e) {
    throw ConfigError(where + e.what());
  } catch (const std::invalid_argument& e) {
    throw ConfigError(where + e.what());
  }
  return initial;
}

}  // namespace specwatch::server
