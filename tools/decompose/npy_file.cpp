#include "tools/decompose/npy_file.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <type_traits>

namespace specwatch::tools {
namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicBytes = 6;
constexpr size_t kChunkBytes = size_t{16} << 20;  // read in pieces: no second copy of a large file in memory
constexpr double kFloatExactLimit = 16777216.0;   // 2^24: larger integers are rounded by float32

struct NpyHeader {
  std::string descr;
  bool fortran_order = false;
  std::vector<int64_t> shape;
  size_t data_offset = 0;
};

[[noreturn]] void Fail(const std::string& path, const std::string& what) { throw NpyError(path + ": " + what); }

size_t SkipSpaces(const std::string& text, size_t at) {
  while (at < text.size() && (text[at] == ' ' || text[at] == '\t' || text[at] == '\n')) ++at;
  return at;
}

// Position just after "'key':" in the header dictionary (numpy writes repr(dict): single quotes).
size_t ValueStart(const std::string& path, const std::string& header, const std::string& key) {
  size_t at = header.find("'" + key + "'");
  if (at == std::string::npos) at = header.find("\"" + key + "\"");
  if (at == std::string::npos) Fail(path, "header has no '" + key + "' entry: " + header);
  at = SkipSpaces(header, at + key.size() + 2);
  if (at >= header.size() || header[at] != ':') Fail(path, "malformed header near '" + key + "': " + header);
  return SkipSpaces(header, at + 1);
}

std::string ParseDescr(const std::string& path, const std::string& header) {
  const size_t at = ValueStart(path, header, "descr");
  const char quote = at < header.size() ? header[at] : '\0';
  if (quote != '\'' && quote != '"') {
    Fail(path, "dtype is not a simple type (structured arrays are not spectra): " + header);
  }
  const size_t end = header.find(quote, at + 1);
  if (end == std::string::npos) Fail(path, "malformed 'descr' in header: " + header);
  return header.substr(at + 1, end - at - 1);
}

bool ParseFortranOrder(const std::string& path, const std::string& header) {
  const size_t at = ValueStart(path, header, "fortran_order");
  if (header.compare(at, 4, "True") == 0) return true;
  if (header.compare(at, 5, "False") == 0) return false;
  Fail(path, "malformed 'fortran_order' in header: " + header);
}

std::vector<int64_t> ParseShape(const std::string& path, const std::string& header) {
  size_t at = ValueStart(path, header, "shape");
  if (at >= header.size() || header[at] != '(') Fail(path, "malformed 'shape' in header: " + header);
  std::vector<int64_t> shape;
  for (at = SkipSpaces(header, at + 1); at < header.size() && header[at] != ')';) {
    size_t end = at;
    while (end < header.size() && header[end] >= '0' && header[end] <= '9') ++end;
    if (end == at || end - at > 15) Fail(path, "malformed 'shape' in header: " + header);
    shape.push_back(std::stoll(header.substr(at, end - at)));
    at = SkipSpaces(header, end);
    if (at < header.size() && header[at] == ',') at = SkipSpaces(header, at + 1);
  }
  if (at >= header.size()) Fail(path, "malformed 'shape' in header: " + header);
  return shape;
}

NpyHeader ReadHeader(const std::string& path, std::ifstream& in) {
  std::array<char, 10> lead{};
  in.read(lead.data(), 8);
  if (!in || std::memcmp(lead.data(), kMagic, kMagicBytes) != 0) Fail(path, "not a NumPy .npy file (bad magic)");
  const int major = static_cast<unsigned char>(lead[6]);
  if (major < 1 || major > 3) Fail(path, "unsupported .npy format version " + std::to_string(major));
  const size_t length_bytes = major == 1 ? 2 : 4;
  std::array<unsigned char, 4> len{};
  in.read(reinterpret_cast<char*>(len.data()), static_cast<std::streamsize>(length_bytes));
  if (!in) Fail(path, "truncated .npy header");
  size_t header_len = 0;
  for (size_t i = 0; i < length_bytes; ++i) header_len |= size_t{len[i]} << (8 * i);
  std::string header(header_len, '\0');
  in.read(header.data(), static_cast<std::streamsize>(header_len));
  if (!in) Fail(path, "truncated .npy header");
  NpyHeader h;
  h.descr = ParseDescr(path, header);
  h.fortran_order = ParseFortranOrder(path, header);
  h.shape = ParseShape(path, header);
  h.data_offset = 8 + length_bytes + header_len;
  return h;
}

struct DtypeInfo {
  const char* name;
  size_t bytes;
};

DtypeInfo CheckDtype(const std::string& path, const std::string& descr) {
  static const std::array<std::pair<const char*, DtypeInfo>, 6> kSupported = {{
      {"u2", {"uint16", 2}}, {"u4", {"uint32", 4}}, {"i4", {"int32", 4}},
      {"i8", {"int64", 8}}, {"f4", {"float32", 4}}, {"f8", {"float64", 8}}}};
  const std::string supported = "uint16, uint32, int32, int64, float32 or float64";
  if (descr.size() == 3 && descr[0] == '>') {
    Fail(path, "big-endian dtype '" + descr + "' is not supported (save it as little-endian: a.astype(a.dtype."
               "newbyteorder('<')))");
  }
  if (descr.size() == 3 && (descr[0] == '<' || descr[0] == '|' || descr[0] == '=')) {
    for (const auto& [code, info] : kSupported) {
      if (descr.compare(1, 2, code) == 0) return info;
    }
  }
  Fail(path, "dtype '" + descr + "' is not supported; expected " + supported);
}

// Spectra and channels of an (N, D) or (H, W, D) shape.
std::pair<int64_t, int64_t> SpectraAndChannels(const std::string& path, const std::vector<int64_t>& shape) {
  if (shape.size() != 2 && shape.size() != 3) {
    Fail(path, "shape has " + std::to_string(shape.size()) + " axes; expected (N, D) or (H, W, D)");
  }
  int64_t spectra = 1;
  for (size_t i = 0; i + 1 < shape.size(); ++i) {
    if (shape[i] > 0 && spectra > std::numeric_limits<int64_t>::max() / shape[i]) Fail(path, "shape too large");
    spectra *= shape[i];
  }
  const int64_t channels = shape.back();
  if (spectra < 1 || channels < 1) Fail(path, "array is empty (no spectra or no channels)");
  if (channels > std::numeric_limits<int>::max()) Fail(path, "too many channels");
  if (spectra > std::numeric_limits<Eigen::Index>::max() / channels) Fail(path, "shape too large");
  return {spectra, channels};
}

template <typename T>
void ConvertValues(const std::string& path, const char* bytes, size_t count, size_t first, int64_t channels,
                   float* out, NpySpectra& result) {
  for (size_t k = 0; k < count; ++k) {
    T v;
    std::memcpy(&v, bytes + k * sizeof(T), sizeof(T));
    if constexpr (std::is_floating_point_v<T>) {
      if (!std::isfinite(v)) {
        const size_t at = first + k;
        Fail(path, "non-finite value at spectrum " + std::to_string(at / channels) + ", channel " +
                       std::to_string(at % channels));
      }
    } else {
      if (std::fabs(static_cast<double>(v)) > kFloatExactLimit) ++result.inexact_values;
    }
    if constexpr (std::is_signed_v<T>) {
      if (v < 0) ++result.negative_values;
    }
    out[k] = static_cast<float>(v);
  }
}

void ConvertChunk(const std::string& path, const std::string& dtype, const char* bytes, size_t count, size_t first,
                  int64_t channels, float* out, NpySpectra& result) {
  if (dtype == "uint16") ConvertValues<uint16_t>(path, bytes, count, first, channels, out, result);
  else if (dtype == "uint32") ConvertValues<uint32_t>(path, bytes, count, first, channels, out, result);
  else if (dtype == "int32") ConvertValues<int32_t>(path, bytes, count, first, channels, out, result);
  else if (dtype == "int64") ConvertValues<int64_t>(path, bytes, count, first, channels, out, result);
  else if (dtype == "float32") ConvertValues<float>(path, bytes, count, first, channels, out, result);
  else ConvertValues<double>(path, bytes, count, first, channels, out, result);
}

uint32_t Crc32(const std::string& bytes) {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  uint32_t crc = 0xFFFFFFFFu;
  for (unsigned char b : bytes) crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8);
  return crc ^ 0xFFFFFFFFu;
}

void PutLE(std::string& out, uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((value >> (8 * i)) & 0xFF));
}

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) throw NpyError(path + ": cannot write");
}

}  // namespace

NpySpectra ReadNpySpectra(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw NpyError(path + ": cannot open");
  const NpyHeader h = ReadHeader(path, in);
  if (h.fortran_order) Fail(path, "Fortran-order array; save it in C order (np.ascontiguousarray)");
  const DtypeInfo dtype = CheckDtype(path, h.descr);
  const auto [spectra, channels] = SpectraAndChannels(path, h.shape);
  const uint64_t values = static_cast<uint64_t>(spectra) * static_cast<uint64_t>(channels);
  const uint64_t expected = h.data_offset + values * dtype.bytes;
  const uint64_t actual = std::filesystem::file_size(path);
  if (actual != expected) {
    Fail(path, "file has " + std::to_string(actual) + " bytes, the header's shape and dtype need " +
                   std::to_string(expected) + (actual < expected ? " (truncated)" : " (trailing data)"));
  }
  NpySpectra result;
  result.shape = h.shape;
  result.dtype = dtype.name;
  result.counts.resize(channels, spectra);
  std::string buffer;
  const size_t chunk_values = kChunkBytes / dtype.bytes;
  for (uint64_t first = 0; first < values; first += chunk_values) {
    const size_t count = static_cast<size_t>(std::min<uint64_t>(chunk_values, values - first));
    buffer.resize(count * dtype.bytes);
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    if (!in) Fail(path, "read error in the data");
    ConvertChunk(path, result.dtype, buffer.data(), count, first, channels, result.counts.data() + first, result);
  }
  return result;
}

std::string NpyBytes(const std::string& descr, const std::vector<int64_t>& shape, const void* data,
                     size_t data_bytes) {
  std::string shape_text = "(";
  for (size_t i = 0; i < shape.size(); ++i) shape_text += (i ? ", " : "") + std::to_string(shape[i]);
  shape_text += shape.size() == 1 ? ",)" : ")";
  std::string dict = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " + shape_text + ", }";
  // Version 1.0: magic (6) + version (2) + length (2) + header, padded with spaces to a multiple of 64, '\n' last.
  const size_t unpadded = 10 + dict.size() + 1;
  dict.append((64 - unpadded % 64) % 64, ' ');
  dict.push_back('\n');
  std::string out(kMagic, kMagicBytes);
  out.push_back('\x01');
  out.push_back('\x00');
  PutLE(out, dict.size(), 2);
  out += dict;
  out.append(static_cast<const char*>(data), data_bytes);
  return out;
}

void WriteNpy(const std::string& path, const std::string& descr, const std::vector<int64_t>& shape,
              const void* data, size_t data_bytes) {
  WriteFile(path, NpyBytes(descr, shape, data, data_bytes));
}

void WriteNpz(const std::string& path, const std::vector<NpzEntry>& entries) {
  // ZIP with stored (uncompressed) members, what numpy.savez writes; no ZIP64, so each member < 4 GiB.
  constexpr uint16_t kVersion = 20, kDosDate = (0 << 9) | (1 << 5) | 1;  // 1980-01-01 00:00
  std::string body, directory;
  for (const NpzEntry& e : entries) {
    const std::string name = e.name + ".npy";
    if (e.npy.size() >= 0xFFFFFFFFu || body.size() >= 0xFFFFFFFFu) {
      throw NpyError(path + ": '" + name + "' is too large for an .npz without ZIP64; write .npy files");
    }
    const uint32_t crc = Crc32(e.npy);
    const uint64_t offset = body.size();
    auto common = [&](std::string& out) {
      PutLE(out, kVersion, 2);
      PutLE(out, 0, 2);  // flags
      PutLE(out, 0, 2);  // stored
      PutLE(out, 0, 2);  // time
      PutLE(out, kDosDate, 2);
      PutLE(out, crc, 4);
      PutLE(out, e.npy.size(), 4);
      PutLE(out, e.npy.size(), 4);
      PutLE(out, name.size(), 2);
      PutLE(out, 0, 2);  // extra field length
    };
    PutLE(body, 0x04034b50, 4);
    common(body);
    body += name;
    body += e.npy;
    PutLE(directory, 0x02014b50, 4);
    PutLE(directory, kVersion, 2);  // made by
    common(directory);
    PutLE(directory, 0, 2);  // comment length
    PutLE(directory, 0, 2);  // disk
    PutLE(directory, 0, 2);  // internal attributes
    PutLE(directory, 0, 4);  // external attributes
    PutLE(directory, offset, 4);
    directory += name;
  }
  std::string end;
  PutLE(end, 0x06054b50, 4);
  PutLE(end, 0, 2);
  PutLE(end, 0, 2);
  PutLE(end, entries.size(), 2);
  PutLE(end, entries.size(), 2);
  PutLE(end, directory.size(), 4);
  PutLE(end, body.size(), 4);
  PutLE(end, 0, 2);
  WriteFile(path, body + directory + end);
}

}  // namespace specwatch::tools
