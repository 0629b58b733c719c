// specwatch-update-parts: what one exact block update of IncrementalSvd costs, part by part, at the shapes of
// the decomposition benchmark; the floor under the update's throughput (docs/decomposition_speed.md).
//
//   specwatch-update-parts [CHANNELS [BLOCK [K ...]]]        defaults: 2048 32 16 24
//
// For each tracked-component count K it times, with the Eigen calls IncrementalSvd::Update makes, on random
// data of the update's shapes (D = CHANNELS, a centred block of BLOCK − 1 columns; the mean-shift column left
// out): P = Uᵀ C; the Gram matrix CᵀC (ColumnGram, and Eigen's symmetric rank update beside it for comparison);
// the basis update C·X + U·Y; and the
// eigen-decomposition of the (K + BLOCK − 1)² matrix M Mᵀ. Median of 15 runs of 200 repetitions each; per block,
// per spectrum and in GFLOP/s; and the ceiling their sum puts on spectra/s (Poisson weighting, the mean,
// the Cholesky of the Gram matrix and the model snapshot come on top).
// A second table splits the eigenproblem: its tridiagonal form (with and without Q) and the QR iteration.
#include "operators/model/column_gram.hpp"

#include <Eigen/Dense>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace {

template <class F>
double MedianSeconds(F&& f, int repetitions) {
  f();  // warm-up
  std::vector<double> runs;
  for (int r = 0; r < 15; ++r) {
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < repetitions; ++i) f();
    runs.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / repetitions);
  }
  std::nth_element(runs.begin(), runs.begin() + runs.size() / 2, runs.end());
  return runs[runs.size() / 2];
}

int PositiveArg(const char* text, const char* what) {
  char* end = nullptr;
  const long v = std::strtol(text, &end, 10);
  if (end == text || *end != '\0' || v < 1 || v > 65536) {
    std::fprintf(stderr, "specwatch-update-parts: %s must be an integer in [1, 65536], got '%s'\n", what, text);
    std::exit(2);
  }
  return static_cast<int>(v);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && (std::string(argv[1]) == "-h" || std::string(argv[1]) == "--help")) {
    std::printf("usage: specwatch-update-parts [CHANNELS [BLOCK [K ...]]]   (defaults 2048 32 16 24)\n");
    return 0;
  }
  const int d = argc > 1 ? PositiveArg(argv[1], "CHANNELS") : 2048;
  const int block = argc > 2 ? PositiveArg(argv[2], "BLOCK") : 32;
  std::vector<int> ks;
  for (int i = 3; i < argc; ++i) ks.push_back(PositiveArg(argv[i], "K"));
  if (ks.empty()) ks = {16, 24};
  struct EigenSplit {
    int n;
    double tridiagonal_s, tridiagonal_q_s, values_s, whole_s;
  };
  std::vector<EigenSplit> splits;
  const int cols = std::max(block - 1, 1);
  std::printf("D %d, block %d (%d centred columns); medians of 15 runs; us per block / per spectrum, GFLOP/s\n", d,
              block, cols);
  std::printf("| K | P = U^T C | C^T C (ColumnGram) | C^T C (Eigen rankUpdate, not used) | C X + U Y | eigen (n) "
              "| sum per spectrum | ceiling spectra/s |\n");
  std::printf("|---|---|---|---|---|---|---|---|\n");
  for (const int k : ks) {
    const Eigen::MatrixXf u = Eigen::MatrixXf::Random(d, k);
    const Eigen::MatrixXf c = Eigen::MatrixXf::Random(d, cols);
    const Eigen::MatrixXf x = Eigen::MatrixXf::Random(cols, k);
    const Eigen::MatrixXf y = Eigen::MatrixXf::Random(k, k);
    Eigen::MatrixXf p(k, cols), gram(cols, cols), basis(d, k);
    const double t_p = MedianSeconds([&] { p.noalias() = u.transpose() * c; }, 200);
    const double t_g = MedianSeconds([&] { specwatch::ColumnGram(c, gram); }, 200);
    const double t_g_eigen = MedianSeconds(
        [&] {
          gram.setZero();
          gram.selfadjointView<Eigen::Lower>().rankUpdate(c.transpose());
        },
        200);
    const double t_r = MedianSeconds(
        [&] {
          basis.noalias() = c * x;
          basis.noalias() += u * y;
        },
        200);
    const int n = k + cols;
    Eigen::MatrixXd m = Eigen::MatrixXd::Random(n, n);
    m = (m * m.transpose()).eval();
    Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> eigen(n);
    const double t_e = MedianSeconds([&] { eigen.compute(m); }, 20);
    // Where the eigenproblem's time goes: Householder tridiagonal form (alone, and with Q formed, as the solver
    // does), and the QR iteration for the eigenvalues alone; the whole less the form with Q is the QR with vectors.
    Eigen::Tridiagonalization<Eigen::MatrixXd> tridiagonal(n);
    Eigen::MatrixXd q(n, n);
    const double t_t = MedianSeconds([&] { tridiagonal.compute(m); }, 20);
    const double t_tq = MedianSeconds([&] { tridiagonal.compute(m); q = tridiagonal.matrixQ(); }, 20);
    const Eigen::VectorXd diagonal = tridiagonal.diagonal(), subdiagonal = tridiagonal.subDiagonal();
    Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> values(n);
    const double t_v =
        MedianSeconds([&] { values.computeFromTridiagonal(diagonal, subdiagonal, Eigen::EigenvaluesOnly); }, 20);
    splits.push_back({n, t_t, t_tq, t_v, t_e});
    const double f_p = 2.0 * d * k * cols, f_g = 1.0 * d * cols * (cols + 1), f_r = 2.0 * d * (cols + k) * k;
    const double per_spectrum = (t_p + t_g + t_r + t_e) / block;
    auto cell = [&](double t, double flops) {
      static char text[96];
      std::snprintf(text, sizeof text, "%.1f / %.2f us, %.0f GF/s", t * 1e6, t / block * 1e6, flops / t / 1e9);
      return std::string(text);
    };
    std::printf("| %d | %s | %s | %s | %s | %.1f / %.2f us (%d) | %.2f us | %.0f |\n", k, cell(t_p, f_p).c_str(),
                cell(t_g, f_g).c_str(), cell(t_g_eigen, f_g).c_str(), cell(t_r, f_r).c_str(), t_e * 1e6, t_e / block * 1e6, n,
                per_spectrum * 1e6, 1.0 / per_spectrum);
  }
  std::printf("\nThe eigenproblem per block (us): Eigen's SelfAdjointEigenSolver, its tridiagonal form, and the QR\n");
  std::printf("| n | whole | tridiagonal form | form with Q | QR, eigenvalues only "
              "| QR with vectors (whole - form with Q) |\n");
  std::printf("|---|---|---|---|---|---|\n");
  for (const EigenSplit& e : splits) {
    std::printf("| %d | %.1f | %.1f | %.1f | %.1f | %.1f |\n", e.n, e.whole_s * 1e6, e.tridiagonal_s * 1e6,
                e.tridiagonal_q_s * 1e6, e.values_s * 1e6, (e.whole_s - e.tridiagonal_q_s) * 1e6);
  }
  return 0;
}
