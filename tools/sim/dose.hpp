#pragma once
/// Electron dose and the beam-damage schedule, in closed form (docs/science.md §8–§9).

#include <cmath>
#include <cstdint>

namespace specwatch::sim {

/// Electrons per pA·µs: 1e-18 C / 1.602176634e-19 C.
inline constexpr double kElectronsPerPicoampMicrosecond = 1e-18 / 1.602176634e-19;  // 6.2415...

/// N_e = I·τ/e.
inline double ElectronsPerSpectrum(double beam_current_pA, double dwell_us) {
  return kElectronsPerPicoampMicrosecond * beam_current_pA * dwell_us;
}

/// D = I·τ/(e·A), A = pixel edge², in e⁻/Å².
inline double DosePerSpectrum_e_per_A2(double beam_current_pA, double dwell_us, double pixel_A) {
  return ElectronsPerSpectrum(beam_current_pA, dwell_us) / (pixel_A * pixel_A);
}

/// Weight of the intact spectrum S₀ in what is recorded during visit `pass` (0-based) of a position that
/// receives `dose_per_visit` per visit: the dwell integrates S(D) = S∞ + (S₀−S∞)·exp(−D/D_c) over
/// D ∈ [p·d, (p+1)·d], so the recording is S∞ + w_p·(S₀−S∞) with
///   w_p = (D_c/d)·(exp(−p·d/D_c) − exp(−(p+1)·d/D_c)).
/// Damage off (critical_dose <= 0) or no dose gives 1.
inline double IntactWeight(uint32_t pass, double dose_per_visit, double critical_dose) {
  if (!(critical_dose > 0.0) || !(dose_per_visit > 0.0)) return 1.0;
  const double x = dose_per_visit / critical_dose;
  // exp(−p x)·(1 − exp(−x))/x, written with expm1 for accuracy when x is small.
  return std::exp(-static_cast<double>(pass) * x) * (-std::expm1(-x)) / x;
}

}  // namespace specwatch::sim
