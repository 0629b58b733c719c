#pragma once
/// Shared by issue 3's acceptance tests: the simulator run in-process, and the independent reference
/// computations (in double) the streaming results are judged against.

#include "operators/core/spectrum_batch.hpp"
#include "tests/unit/operators/synthetic.hpp"
#include "tools/sim/simulator.hpp"

#include <Eigen/Dense>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace specwatch::acceptance {

/// Frames of a seeded simulation as D x m float counts, decoded from the payload as on the wire (uint16 or
/// uint32; float32 too). One thread.
class SimFrames {
 public:
  explicit SimFrames(const sim::SimOptions& o) : sim_(o) {}
  uint64_t FrameCount() const { return sim_.FrameCount(); }
  const sim::Simulator& sim() const { return sim_; }
  Eigen::MatrixXf Frame(uint64_t k) {
    const sim::FrameInfo f = sim_.Frame(k);
    bytes_.resize(sim_.PayloadBytes(f.spectrum_count));
    sim_.GenerateFrame(k, ws_, bytes_);
    switch (sim_.Options().payload) {
      case sim::PayloadKind::kUint16: return Decode<uint16_t>(f.spectrum_count);
      case sim::PayloadKind::kUint32: return Decode<uint32_t>(f.spectrum_count);
      case sim::PayloadKind::kFloat32: return Decode<float>(f.spectrum_count);
    }
    return {};
  }
  /// Noiseless expected counts of the spectra of frame k (the simulator's ground truth), D x m.
  Eigen::MatrixXd Truth(uint64_t k) const {
    const sim::FrameInfo f = sim_.Frame(k);
    Eigen::MatrixXd out(sim_.Channels(), f.spectrum_count);
    for (uint32_t i = 0; i < f.spectrum_count; ++i) {
      const std::vector<double> e = sim_.ExpectedSpectrum(f.start_index + i);
      out.col(i) = Eigen::Map<const Eigen::VectorXd>(e.data(), sim_.Channels());
    }
    return out;
  }

 private:
  template <typename T>
  Eigen::MatrixXf Decode(uint32_t spectra) const {
    const Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>> counts(
        reinterpret_cast<const T*>(bytes_.data()), sim_.Channels(), spectra);
    return counts.template cast<float>();
  }

  sim::Simulator sim_;
  sim::FrameWorkspace ws_;
  std::vector<std::byte> bytes_;
};

inline sim::SimOptions Options(Modality modality, int channels, int phases, double counts, uint32_t side,
                               uint32_t passes) {
  sim::SimOptions o;
  o.modality = modality;
  o.channels = channels;
  o.phases = phases;
  o.mean_counts = counts;
  o.scan_width = side;
  o.scan_height = side;
  o.passes = passes;
  o.seed = 20 + static_cast<uint64_t>(phases);
  return o;
}

/// The centred scatter matrix of Poisson-weighted spectra, x̃ = x / sqrt(a_i b_j) (a_i the spectrum total
/// floored at 1, as SpectrumTotals), for a channel scale sqrt(b) chosen after the data were seen: it keeps the
/// raw moments G = Σ x xᵀ / a_i and m = Σ x / sqrt(a_i) in double, and
///   C = S⁻¹ G S⁻¹ − (S⁻¹ m)(S⁻¹ m)ᵀ / n,   S = diag(sqrt(b)),
/// so C's leading eigenvectors are the left singular vectors of the batch SVD of the weighted, centred data.
/// Unweighted (weighted = false): G = Σ x xᵀ, m = Σ x and S = I.
/// Sparse spectra (low dose) are added count by count, dense ones by a rank update in double.
class CentredScatter {
 public:
  CentredScatter(int channels, bool weighted)
      : weighted_(weighted), g_(Eigen::MatrixXd::Zero(channels, channels)), m_(Eigen::VectorXd::Zero(channels)) {}

  void Add(const Eigen::Ref<const Eigen::MatrixXf>& spectra) {
    const Eigen::Index d = spectra.rows();
    Eigen::MatrixXd dense(d, spectra.cols());
    Eigen::Index dense_cols = 0;
    std::vector<int> index;
    std::vector<double> value;
    for (Eigen::Index i = 0; i < spectra.cols(); ++i) {
      const auto x = spectra.col(i);
      const double total = std::max(1.0, static_cast<double>(x.cast<double>().sum()));
      const double scale = weighted_ ? 1.0 / std::sqrt(total) : 1.0;  // x xᵀ / a = (x / sqrt a)(x / sqrt a)ᵀ
      m_ += x.cast<double>() * scale;
      n_ += 1.0;
      index.clear();
      value.clear();
      for (Eigen::Index j = 0; j < d; ++j) {
        if (x(j) != 0.0f) {
          index.push_back(static_cast<int>(j));
          value.push_back(x(j) * scale);
        }
      }
      if (static_cast<Eigen::Index>(index.size()) * 8 > d) {
        dense.col(dense_cols++) = x.cast<double>() * scale;
        continue;
      }
      for (size_t a = 0; a < index.size(); ++a) {  // lower triangle
        double* column = g_.col(index[a]).data();
        for (size_t b = a; b < index.size(); ++b) column[index[b]] += value[a] * value[b];
      }
    }
    if (dense_cols > 0) g_.selfadjointView<Eigen::Lower>().rankUpdate(dense.leftCols(dense_cols));
  }

  double Count() const { return n_; }

  /// C for the channel scale sqrt(b) (ignored when unweighted).
  Eigen::MatrixXd Scatter(const Eigen::VectorXf& channel_scale) const {
    const Eigen::Index d = g_.rows();
    const Eigen::VectorXd inverse =
        weighted_ ? Eigen::VectorXd(channel_scale.cast<double>().cwiseInverse()) : Eigen::VectorXd::Ones(d);
    Eigen::MatrixXd c = g_.selfadjointView<Eigen::Lower>();
    c = inverse.asDiagonal() * c * inverse.asDiagonal();
    const Eigen::VectorXd mean_sum = inverse.cwiseProduct(m_);
    c.noalias() -= mean_sum * mean_sum.transpose() / n_;
    return c;
  }

 private:
  bool weighted_;
  Eigen::MatrixXd g_;  // lower triangle used
  Eigen::VectorXd m_;
  double n_ = 0;
};

/// Leading eigenpairs of a symmetric positive semi-definite matrix by subspace iteration with Rayleigh–Ritz
/// (a dense eigensolver of a 2048 x 2048 matrix takes ~20 s here; this takes well under one). Iterates until
/// the leading `count` Ritz vectors move less than 1e-7 rad between iterations (the tests judge at 0.1–5°).
struct Eigenpairs {
  Eigen::MatrixXd vectors;  // D x count, orthonormal, decreasing eigenvalue
  Eigen::VectorXd values;   // count + a few more (the next Ritz values, for the gap)
  int iterations = 0;
};

inline Eigenpairs LeadingEigenpairs(const Eigen::MatrixXd& c, int count, int extra = 12) {
  const Eigen::Index d = c.rows();
  const int k = std::min<int>(count + extra, static_cast<int>(d));
  Eigen::MatrixXd q = Eigen::MatrixXd::Zero(d, k);
  for (int i = 0; i < k; ++i) q(static_cast<Eigen::Index>((i * 7919) % d), i) = 1.0;  // any full-rank start
  q += c * q;  // mix the start with the matrix's leading directions
  Eigen::MatrixXd previous;
  Eigenpairs out;
  for (out.iterations = 1; out.iterations <= 2000; ++out.iterations) {
    q = Eigen::HouseholderQR<Eigen::MatrixXd>(c * q).householderQ() * Eigen::MatrixXd::Identity(d, k);
    const Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> ritz(q.transpose() * c * q);
    q = q * ritz.eigenvectors().rowwise().reverse();  // decreasing
    out.values = ritz.eigenvalues().reverse();
    if (previous.size() > 0) {
      const Eigen::MatrixXd lead = q.leftCols(count);
      const Eigen::MatrixXd outside = lead - previous * (previous.transpose() * lead);
      if (Eigen::JacobiSVD<Eigen::MatrixXd>(outside).singularValues()(0) < 1e-7) break;
    }
    previous = q.leftCols(count);
  }
  out.vectors = q.leftCols(count);
  return out;
}

using test::LargestPrincipalAngleDeg;
using test::Leading;

inline double Median(std::vector<double> v) {
  const size_t h = v.size() / 2;
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(h), v.end());
  const double upper = v[h];
  if (v.size() % 2 == 1) return upper;
  return 0.5 * (upper + *std::max_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(h)));
}

/// Robust standard deviation: 1.4826 · median absolute deviation (= σ for a normal distribution).
inline double RobustSigma(const std::vector<double>& v) {
  const double centre = Median(v);
  std::vector<double> deviation(v.size());
  for (size_t i = 0; i < v.size(); ++i) deviation[i] = std::abs(v[i] - centre);
  return 1.4826 * Median(deviation);
}

}  // namespace specwatch::acceptance
