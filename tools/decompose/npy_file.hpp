#pragma once
/// NumPy .npy / .npz files for the offline tools: a careful reader of spectrum arrays and a small writer.
///
/// Reader: format versions 1.0, 2.0 and 3.0; C order; little-endian (or byte-order free) dtypes uint16, uint32,
/// int32, int64, float32, float64; shape (N, D) or (H, W, D), the last axis being the channels. A C-order (N, D)
/// array has the memory layout of a column-major D x N matrix, so spectrum i (raster order) becomes column i.
/// Every problem (not a .npy file, unsupported dtype or order, truncated data, a non-finite value) throws
/// NpyError with a message naming the file and what is wrong.
///
/// Writer: version 1.0 .npy files, and .npz archives (a ZIP of .npy files, stored uncompressed, as
/// numpy.savez writes them) for numpy.load. No thread-safety concerns: plain functions on their arguments.

#include "operators/core/spectrum_batch.hpp"

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace specwatch::tools {

struct NpyError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// Spectra read from a .npy file.
struct NpySpectra {
  CountsMatrix counts;          ///< D x N, float, column i = spectrum i in C (raster) order
  std::vector<int64_t> shape;   ///< as stored
  std::string dtype;            ///< "uint16", "uint32", "int32", "int64", "float32" or "float64"
  uint64_t negative_values = 0;  ///< values below 0 (not counts; kept as they are)
  uint64_t inexact_values = 0;   ///< integers above 2^24, which float32 rounds
};

/// Reads a whole spectrum array. Throws NpyError.
NpySpectra ReadNpySpectra(const std::string& path);

/// A complete .npy file in memory: header for `descr` (e.g. "<f4") and `shape`, then `data_bytes` of data.
std::string NpyBytes(const std::string& descr, const std::vector<int64_t>& shape, const void* data,
                     size_t data_bytes);

/// Writes a .npy file. Throws NpyError when the file cannot be written.
void WriteNpy(const std::string& path, const std::string& descr, const std::vector<int64_t>& shape,
              const void* data, size_t data_bytes);

/// One array of an .npz archive: `name` without ".npy", `npy` from NpyBytes.
struct NpzEntry {
  std::string name;
  std::string npy;
};

/// Writes an uncompressed .npz archive (each entry stored as "<name>.npy"). Throws NpyError.
void WriteNpz(const std::string& path, const std::vector<NpzEntry>& entries);

}  // namespace specwatch::tools
