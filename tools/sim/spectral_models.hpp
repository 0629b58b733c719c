#pragma once
/// Noiseless spectral models of pure phases for EELS, EDS, XRD and Raman, as densities over the energy
/// (2θ, wavenumber) axis. Each phase has an intact spectrum S₀ and a fully beam-damaged one S∞ (the
/// simulator mixes them as S(D) = S∞ + (S₀−S∞)·exp(−D/D_c)). Scales are arbitrary: the simulator
/// normalises each phase to the requested mean counts. Pure functions, safe on any thread.
///
/// Units: EELS eV (energy loss), EDS keV (X-ray energy), XRD degrees (2θ, Cu Kα), Raman cm⁻¹ (shift).

#include "operators/core/spectrum_batch.hpp"

#include <functional>
#include <string>
#include <vector>

namespace specwatch::sim {

/// Expected intensity per unit of the axis at one axis value (E, 2θ or ν).
using Density = std::function<double(double)>;

enum class PhaseRole { kBase, kInclusion, kGrow };

struct PhaseModel {
  std::string name;                ///< short, e.g. "Fe2O3"
  std::string description;         ///< what the spectrum contains
  std::string damage_description;  ///< what S∞ changes
  PhaseRole role = PhaseRole::kBase;
  Density intact;
  Density damaged;
};

/// The axis the simulator uses unless overridden: EELS −20…1004 eV (ZLP in range), EDS 0…20.48 keV,
/// XRD 2θ 10…90°, Raman 100…3300 cm⁻¹, each spread over `channels`.
EnergyAxis DefaultAxis(Modality modality, int channels);

/// How many distinct base phases the catalogue has for `modality` (6 for EDS, 5 for the others).
int MaxBasePhases(Modality modality);

/// The first `count` base phases of the catalogue; `axis` and `channels` give the range over which the
/// parts of XRD and Raman spectra (peaks, hump, fluorescence) are normalised.
/// Throws std::invalid_argument when count is outside 1..MaxBasePhases.
std::vector<PhaseModel> BasePhases(Modality modality, int count, const EnergyAxis& axis, int channels);
/// A phase with a spectral feature none of the base phases has (rare inclusion).
PhaseModel InclusionPhase(Modality modality, const EnergyAxis& axis, int channels);
/// The phase that forms during the run (--grow-phase).
PhaseModel GrowPhase(Modality modality, const EnergyAxis& axis, int channels);

// Building blocks, exposed for tests.

/// EDS detector resolution: FWHM² = FWHM_MnKα² + 2.455 eV·(E − 5.8988 keV), FWHM_MnKα = 130 eV
/// (Fano factor 0.115, 3.85 eV per electron-hole pair in Si). Returns keV.
double EdsFwhm_keV(double energy_keV);
/// Bragg angle 2θ (degrees) of a reflection with spacing d (Å) at wavelength λ (Å); NaN if λ > 2d.
double BraggTwoTheta_deg(double d_A, double wavelength_A);
inline constexpr double kCuKalpha1_A = 1.540562;
inline constexpr double kCuKalpha2_A = 1.544390;
/// Area-normalised Gaussian and Lorentzian profiles.
double GaussianArea(double x, double centre, double fwhm);
double LorentzianArea(double x, double centre, double fwhm);

}  // namespace specwatch::sim
