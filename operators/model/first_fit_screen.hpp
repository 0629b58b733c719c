#pragma once
/// The first fit's outlier screen (docs/science.md §3 "The first fit"): which spectra of a model's first block
/// carry a component of their own, so that the model is not born with a rare spectrum as one of its components.
///
/// A weighted model learns its first block (the weighting's calibration spectra, 256 by default) before any
/// score exists: nothing can be judged novel yet. A rare spectrum in it (an inclusion crossed by the first scan
/// lines) is far enough from the others to pass the rank threshold on its own, so the model would learn it as a
/// component and explain it ever after. What marks such a component is its support: the share of its energy
/// that each spectrum carries. With the block's centred thin SVD X − x̄ = U S Vᵀ (N spectra) and the rank k of the
/// model's own rule (Gavish–Donoho, σ from the energy beyond k_max; incremental_svd.hpp), the leverage
///   h_i = Σ_{c < k} V_ic²          (mean k / N; each of n spectra sharing a component alone: ≈ 1/n)
/// says how much of the rank spectrum i holds by itself. Spectra with h_i > 1 / min_component_support are held
/// out, at most kFirstFitMaxHeldOutFraction of the block (the highest leverage first), and the screen is repeated on
/// the rest (twice at most: a second inclusion can hide behind a first). A phase the first block only grazes (fewer
/// spectra than min_component_support) is held out too; it is learnt when its spectra become common (the
/// guard's release rules), and the spectra held out here are scored again at the pass end.
///
/// Cost: the N x N Gram matrix once (1.5 ms at N = 256, D = 992), then per round the eigen-decomposition of its
/// centred kept part (float, 3.7 ms): 5–10 ms per model start, one core. The first model, so the end of the raw
/// output, waits for it (tools/python/first_pass_real.py measures how many spectra come back raw at a rate).
/// Pure function; any thread.

#include "operators/model/incremental_svd.hpp"

#include <Eigen/Core>

#include <cstdint>
#include <vector>

namespace specwatch {

struct FirstFitScreen {
  std::vector<uint8_t> keep;  ///< per spectrum: 1 = learn it
  int held_out = 0;
  int rank = 0;               ///< of the block, after the held-out spectra left it
  double max_leverage = 0.0;  ///< the highest leverage kept
};

/// At most this share of the block is held out: the guard's default max_fraction (outlier_guard.hpp), what is
/// more common than that is not rare. Blocks of fewer than 4 × min_component_support spectra are not screened
/// (too few to tell support).
constexpr double kFirstFitMaxHeldOutFraction = 0.05;

/// `weighted`: D x N weighted spectra (the block as the model would learn it). options.min_component_support
/// = 0: everything kept.
FirstFitScreen ScreenFirstBlock(const Eigen::Ref<const Eigen::MatrixXf>& weighted, const SubspaceOptions& options);

}  // namespace specwatch
