#include "operators/model/column_gram.hpp"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace specwatch {

namespace {

#if defined(__AVX512F__)
// gram(i0 + a, j0 + b) for a, b in 0..3: the 4 x 4 tile of column pairs, one pass down the rows.
void Tile4x4(const float* const* ci, const float* const* cj, Eigen::Index rows, float out[4][4]) {
  __m512 acc[4][4];
  for (auto& row : acc) {
    for (auto& v : row) v = _mm512_setzero_ps();
  }
  Eigen::Index r = 0;
  for (; r + 16 <= rows; r += 16) {
    const __m512 a0 = _mm512_loadu_ps(ci[0] + r), a1 = _mm512_loadu_ps(ci[1] + r);
    const __m512 a2 = _mm512_loadu_ps(ci[2] + r), a3 = _mm512_loadu_ps(ci[3] + r);
    const __m512 b[4] = {_mm512_loadu_ps(cj[0] + r), _mm512_loadu_ps(cj[1] + r), _mm512_loadu_ps(cj[2] + r),
                         _mm512_loadu_ps(cj[3] + r)};
    for (int q = 0; q < 4; ++q) {
      acc[0][q] = _mm512_fmadd_ps(a0, b[q], acc[0][q]);
      acc[1][q] = _mm512_fmadd_ps(a1, b[q], acc[1][q]);
      acc[2][q] = _mm512_fmadd_ps(a2, b[q], acc[2][q]);
      acc[3][q] = _mm512_fmadd_ps(a3, b[q], acc[3][q]);
    }
  }
  if (r < rows) {  // the last rows, masked
    const __mmask16 mask = static_cast<__mmask16>((1u << (rows - r)) - 1u);
    __m512 a[4], b[4];
    for (int p = 0; p < 4; ++p) {
      a[p] = _mm512_maskz_loadu_ps(mask, ci[p] + r);
      b[p] = _mm512_maskz_loadu_ps(mask, cj[p] + r);
    }
    for (int p = 0; p < 4; ++p) {
      for (int q = 0; q < 4; ++q) acc[p][q] = _mm512_fmadd_ps(a[p], b[q], acc[p][q]);
    }
  }
  for (int p = 0; p < 4; ++p) {
    for (int q = 0; q < 4; ++q) out[p][q] = _mm512_reduce_add_ps(acc[p][q]);
  }
}
#endif

}  // namespace

void ColumnGram(const Eigen::Ref<const Eigen::MatrixXf>& columns, Eigen::MatrixXf& gram) {
  const Eigen::Index m = columns.cols();
  const Eigen::Index rows = columns.rows();
  gram.resize(m, m);
  Eigen::Index tiled = 0;  // columns [0, tiled) are done in 4 x 4 tiles
#if defined(__AVX512F__)
  tiled = m / 4 * 4;
  for (Eigen::Index i0 = 0; i0 < tiled; i0 += 4) {
    const float* ci[4] = {columns.col(i0).data(), columns.col(i0 + 1).data(), columns.col(i0 + 2).data(),
                          columns.col(i0 + 3).data()};
    for (Eigen::Index j0 = 0; j0 <= i0; j0 += 4) {
      const float* cj[4] = {columns.col(j0).data(), columns.col(j0 + 1).data(), columns.col(j0 + 2).data(),
                            columns.col(j0 + 3).data()};
      float tile[4][4];
      Tile4x4(ci, cj, rows, tile);
      for (int p = 0; p < 4; ++p) {
        for (int q = 0; q < 4; ++q) {
          gram(i0 + p, j0 + q) = tile[p][q];
          gram(j0 + q, i0 + p) = tile[p][q];
        }
      }
    }
  }
#endif
  // Columns past the tiles, against every column.
  for (Eigen::Index i = tiled; i < m; ++i) {
    for (Eigen::Index j = 0; j <= i; ++j) {
      const float v = columns.col(i).dot(columns.col(j));
      gram(i, j) = v;
      gram(j, i) = v;
    }
  }
}

}  // namespace specwatch
