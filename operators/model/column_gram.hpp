#pragma once
/// CᵀC of a tall, narrow float matrix (D x m, D ≫ m): the Gram matrix of a block of spectra in the model update.
///
/// Eigen's GEMM and symmetric rank update pack and block for large products; at D 2048 x m 31 they run at about a
/// quarter of the machine's float rate. This kernel takes 4 x 4 tiles of column pairs and streams down the rows
/// once per tile, with 16 vector accumulators (AVX-512 when compiled for it, Eigen dot products otherwise).
/// Pure function; thread-safe.

#include <Eigen/Core>

namespace specwatch {

/// gram ← columnsᵀ · columns, both triangles (resized to m x m). Float accumulation in 16 lanes of D/16 terms
/// each, then summed: the rounding of a D-term float dot product, no worse.
void ColumnGram(const Eigen::Ref<const Eigen::MatrixXf>& columns, Eigen::MatrixXf& gram);

}  // namespace specwatch
