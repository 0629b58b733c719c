#include "operators/model/column_gram.hpp"

#include <doctest/doctest.h>

#include <random>

namespace specwatch {
namespace {

TEST_CASE("ColumnGram: equals CᵀC computed in double, for every tile remainder and row tail") {
  std::mt19937_64 gen(5);
  std::normal_distribution<float> normal;
  for (const int rows : {1, 5, 16, 17, 2047, 2048}) {
    for (const int cols : {1, 3, 4, 5, 8, 31, 33}) {
      CAPTURE(rows);
      CAPTURE(cols);
      // Offset columns, as spectra are: the products are dominated by a common part.
      const Eigen::MatrixXf c =
          Eigen::MatrixXf::NullaryExpr(rows, cols, [&] { return normal(gen); }).array() + 3.0f;
      Eigen::MatrixXf gram;
      ColumnGram(c, gram);
      REQUIRE(gram.rows() == cols);
      REQUIRE(gram.cols() == cols);
      const Eigen::MatrixXd exact = c.cast<double>().transpose() * c.cast<double>();
      const double error = (gram.cast<double>() - exact).cwiseAbs().maxCoeff() / exact.cwiseAbs().maxCoeff();
      CHECK(error < 1e-6);
      CHECK(gram == gram.transpose());
    }
  }
}

TEST_CASE("ColumnGram: columns of a block inside a larger matrix (outer stride) and an empty block") {
  const Eigen::MatrixXf big = Eigen::MatrixXf::Random(300, 40);
  Eigen::MatrixXf gram;
  ColumnGram(big.block(7, 3, 250, 13), gram);
  const Eigen::MatrixXd block = big.block(7, 3, 250, 13).cast<double>();
  CHECK((gram.cast<double>() - block.transpose() * block).cwiseAbs().maxCoeff() < 1e-4);
  ColumnGram(big.leftCols(0), gram);
  CHECK(gram.size() == 0);
}

}  // namespace
}  // namespace specwatch
