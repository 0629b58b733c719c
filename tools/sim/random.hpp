#pragma once
/// Random numbers for the simulator: a small, fast, portable generator (xoshiro256++ seeded by splitmix64)
/// and an exact Poisson sampler. Written out here rather than taken from <random> because the standard
/// distributions are implementation-defined (the same seed must give the same bytes with any standard
/// library) and std::poisson_distribution is far too slow per channel.
/// Not thread-safe: one generator per thread (the simulator seeds one per frame).

#include <cmath>
#include <cstdint>

namespace specwatch::sim {

/// splitmix64 (Steele, Lea, Flood 2014): used to derive independent seeds from (seed, frame number).
inline uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/// Hash of two 64-bit words, for per-frame / per-purpose seeds.
inline uint64_t MixSeed(uint64_t a, uint64_t b) {
  uint64_t s = a ^ (b * 0xD6E8FEB86659FD93ull);
  SplitMix64(s);
  return SplitMix64(s);
}

/// xoshiro256++ (Blackman & Vigna 2019): 2^256-1 period, passes BigCrush, ~1 ns per 64-bit draw.
class Rng {
 public:
  explicit Rng(uint64_t seed) {
    uint64_t sm = seed;
    for (auto& w : s_) w = SplitMix64(sm);
  }
  uint64_t Next() {
    const uint64_t result = Rotl(s_[0] + s_[3], 23) + s_[0];
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = Rotl(s_[3], 45);
    return result;
  }
  /// Uniform in [0, 1) with 53 random bits.
  double Uniform() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }
  /// Uniform in (0, 1): never 0, safe for log().
  double UniformOpen() { return (static_cast<double>(Next() >> 11) + 0.5) * 0x1.0p-53; }
  /// Uniform integer in [0, n) by multiply-shift of 32 random bits (bias < n / 2^32).
  uint32_t Below(uint32_t n) { return static_cast<uint32_t>(((Next() >> 32) * n) >> 32); }

 private:
  static uint64_t Rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t s_[4];
};

/// ln(k!) exactly enough for the rejection test: a table below 256, Stirling's series above
/// (error < 1e-15 relative there).
double LogFactorial(uint64_t k);

/// Draws from Poisson(mean), exactly (up to floating point): inversion by sequential search for
/// mean < 10, Hörmann's transformed rejection with squeeze (PTRS, 1993) above. mean <= 0 gives 0.
uint64_t SamplePoisson(Rng& rng, double mean);

}  // namespace specwatch::sim
