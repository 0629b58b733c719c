#!/usr/bin/python3
"""The streaming decomposition on the measured FePt core-shell STEM-EDS spectrum image: writes docs/real_data.md
and docs/real_data_fept.png. One command, reproducible (fixed thinning seed):

    /usr/bin/python3 tools/python/real_data_report.py [--bin build/bin]

(a) specwatch-decompose --auto-rank (Poisson weighting) on the full image: the rank found; also with the Poisson
    weights calibrated on every spectrum (--calibration-spectra N) instead of the default first 256.
(b) The strongest lines of the mean spectrum and of the top eigenspectra (in counts), matched to EDS line energies.
(c) Held-out Poisson deviance by thinning (docs/science.md §10): x1 ~ Binomial(x, 1/2), x2 = x - x1. x1 is learnt
    and denoised by specwatch-decompose (weighted, and unweighted: plain PCA), auto rank and fixed ranks; the mean
    per-pixel deviance 2 sum_j [x2 ln(x2/mu) - (x2 - mu)] of x2 against mu = denoised x1 (floored), compared with
    mu = raw x1. Both halves have the same mean, so a lower deviance is a better estimate of it.
"""

import argparse
import datetime
import json
import os
import subprocess
import tempfile

import numpy as np

import decompose_runner as dr

DATA = os.path.join(os.path.dirname(dr.ROOT), "shared", "data", "eds_si_FePt_core_shell_64x64x992.npy")
DOCS = os.path.join(dr.ROOT, "docs")
MU_FLOOR = 0.01  # counts: smallest mean the evaluation deviance uses (docs/science.md §10), for mu <= 0 or raw zeros
MU_FLOOR_ALT = 0.001
FIXED_RANKS = [1, 2, 3, 4, 8, 16]
EIGENSPECTRA_SHOWN = 4
MEAN_PEAKS = {"count": 8, "min_fraction": 0.01}  # the mean spectrum: C K is 15x the next line
MATCH_TOLERANCE_KEV = 0.12  # the detector's FWHM is ~0.13 keV at Mn Ka; channels are 0.02 keV

# EDS line energies (keV) and why each could be in this sample: FePt particles (Fe, Pt), on a carbon film on a
# Cu grid, surface oxide, the Si(Li)/SDD detector and the holder. Pt Ll (7.99) is left out: it sits on Cu Ka.
LINES = [
    ("C K", 0.277, "support film / contamination"),
    ("O K", 0.525, "surface oxide"),
    ("Fe L", 0.705, "sample"),
    ("Cu L", 0.930, "grid"),
    ("Ga L", 1.098, "FIB (unlikely: dispersed particles)"),
    ("Si K", 1.740, "detector / contamination"),
    ("Pt M", 2.048, "sample"),
    ("Fe Ka", 6.404, "sample"),
    ("Co Ka", 6.930, "holder / pole piece"),
    ("Fe Kb", 7.058, "sample"),
    ("Cu Ka", 8.048, "grid"),
    ("Cu Kb", 8.905, "grid"),
    ("Ga Ka", 9.251, "FIB (unlikely)"),
    ("Pt La", 9.442, "sample"),
    ("Pt Lb", 11.071, "sample"),
    ("Pt Lg", 12.942, "sample"),
]


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bin", default=dr.default_bin_dir(), help="directory of specwatch-decompose [%(default)s]")
    p.add_argument("--data", default=DATA, help="the .npy spectrum image (with its .json sidecar)")
    p.add_argument("--docs", default=DOCS, help="where real_data.md and real_data_fept.png go [%(default)s]")
    p.add_argument("--calibration-spectra", type=int,
                   help="Poisson weighting calibration for the main runs [the operators' default]")
    p.add_argument("--max-rank", type=int, default=16, help="--rank of the auto-rank runs [%(default)s]")
    p.add_argument("--seed", type=int, default=0, help="thinning seed [%(default)s]")
    return p.parse_args()


def energy_axis(data_path, channels):
    with open(os.path.splitext(data_path)[0] + ".json") as f:
        meta = json.load(f)
    axis = meta["axes_in_array_order"][-1]
    return axis["offset"] + axis["scale"] * np.arange(channels), axis["units"]


def model_args(args, weighting, rank, auto, calibration=None):
    a = ["--weighting", weighting, "--rank", rank, "--warmup-spectra", 0]
    if auto:
        a.append("--auto-rank")
    calibration = calibration or args.calibration_spectra
    if calibration:
        a += ["--calibration-spectra", calibration]
    return a


def underweighted(scale_default, scale_all, energy, below=0.5):
    """Channels where the default calibration's b is below `below` x b of the whole scan, and their lines."""
    ratio = (scale_default.astype(np.float64) / scale_all) ** 2
    low = np.flatnonzero(ratio < below)
    names = sorted({nearest_line(energy[j])[0] for j in low} - {"?"}, key=lambda n: [l[0] for l in LINES].index(n))
    return {"channels": int(low.size), "min_ratio": float(ratio.min()), "lines": ", ".join(names)}


def nearest_line(energy_keV):
    name, e, source = min(LINES, key=lambda line: abs(line[1] - energy_keV))
    return (name, source) if abs(e - energy_keV) <= MATCH_TOLERANCE_KEV else ("?", "")


def strongest_peaks(spectrum, energy, count=4, min_separation_keV=0.25, min_fraction=0.15):
    """Up to `count` local maxima of |spectrum| (3-channel smoothed), strongest first, well separated."""
    magnitude = np.convolve(np.abs(spectrum), np.ones(3) / 3.0, mode="same")
    is_peak = np.r_[False, (magnitude[1:-1] >= magnitude[:-2]) & (magnitude[1:-1] >= magnitude[2:]), False]
    peaks = []
    for j in np.argsort(magnitude)[::-1]:
        if not is_peak[j] or magnitude[j] < min_fraction * magnitude.max():
            continue
        if all(abs(energy[j] - energy[p]) >= min_separation_keV for p in peaks):
            peaks.append(j)
        if len(peaks) == count:
            break
    return peaks


def describe_peaks(spectrum, energy, signed, count=5, min_fraction=0.1):
    parts = []
    for j in strongest_peaks(spectrum, energy, count=count, min_fraction=min_fraction):
        name, _ = nearest_line(energy[j])
        sign = ("+" if spectrum[j] > 0 else "-") if signed else ""
        parts.append("%s%s (%.2f keV)" % (sign, name, energy[j]))
    return ", ".join(parts)


def oriented(eigenspectrum):
    """Eigenvectors have no sign: make the strongest entry positive."""
    return eigenspectrum if eigenspectrum[np.argmax(np.abs(eigenspectrum))] > 0 else -eigenspectrum


def mean_deviance(x2, mu, floor):
    """Mean over pixels of 2 sum_j [x2 ln(x2/mu) - (x2 - mu)], mu floored; a zero count contributes 2 mu."""
    mu = np.maximum(mu.astype(np.float64), floor)
    x2 = x2.astype(np.float64)
    log_term = np.where(x2 > 0, x2 * np.log(np.where(x2 > 0, x2, 1.0) / mu), 0.0)
    return float((2.0 * (log_term - (x2 - mu))).sum(axis=1).mean())


def thin(counts, seed):
    rng = np.random.default_rng(seed)
    x1 = rng.binomial(counts.astype(np.int64), 0.5)
    return x1, counts.astype(np.int64) - x1


def deviance_rows(args, x1_path, x1, x2, workdir):
    """One row per method: the model learnt on x1, denoised x1 scored against x2."""
    n = x1.shape[0]
    rows = [{"method": "raw x1", "rank": "-", "dev": mean_deviance(x2, x1, MU_FLOOR),
             "dev_alt": mean_deviance(x2, x1, MU_FLOOR_ALT)}]
    totals = np.maximum(x1.sum(axis=1, keepdims=True), 1)
    shape = x1.sum(axis=0) / x1.sum()
    rank0 = totals * shape[None, :]
    rows.append({"method": "mean shape x pixel total (rank 0)", "rank": 0, "dev": mean_deviance(x2, rank0, MU_FLOOR),
                 "dev_alt": mean_deviance(x2, rank0, MU_FLOOR_ALT)})
    runs = [("weighted (Poisson)", "poisson", args.max_rank, True, None),
            ("weighted, calibrated on all spectra", "poisson", args.max_rank, True, n),
            ("unweighted (plain PCA)", "none", args.max_rank, True, None)]
    runs += [("weighted (Poisson)", "poisson", k, False, None) for k in FIXED_RANKS]
    runs += [("weighted, calibrated on all spectra", "poisson", k, False, n) for k in FIXED_RANKS]
    runs += [("unweighted (plain PCA)", "none", k, False, None) for k in FIXED_RANKS]
    denoised_path = os.path.join(workdir, "denoised.npy")
    for label, weighting, rank, auto, calibration in runs:
        r = dr.decompose(args.bin, "--input", x1_path, *model_args(args, weighting, rank, auto, calibration),
                         "--write-denoised", denoised_path)
        mu = np.load(denoised_path)
        rows.append({"method": label + (", auto rank" if auto else ""), "rank": r["rank"],
                     "dev": mean_deviance(x2, mu, MU_FLOOR), "dev_alt": mean_deviance(x2, mu, MU_FLOOR_ALT)})
    return rows


def plot(path, energy, mean_spectrum, eigenspectra, lines_to_mark):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7), sharex=True, gridspec_kw={"height_ratios": [1, 1.6]})
    top.semilogy(energy, np.maximum(mean_spectrum, 1e-4), color="k", lw=0.8)
    top.set_ylabel("mean counts / channel")
    top.set_title("FePt core-shell STEM-EDS, 64x64 pixels: mean spectrum and top eigenspectra (in counts)")
    above_1keV = energy > 1.0  # C K (0.28 keV) dwarfs every other feature: scale on the rest, clip C K
    for c, e in enumerate(eigenspectra):
        scaled = np.clip(e / np.abs(e[above_1keV]).max(), -1.3, 1.3)
        bottom.plot(energy, scaled - 2.8 * c, lw=0.8, label="component %d" % (c + 1))
        bottom.axhline(-2.8 * c, color="0.8", lw=0.5)
    bottom.set_yticks([])
    bottom.set_ylabel("eigenspectra, each scaled to its largest\nvalue above 1 keV (C K clipped), offset")
    bottom.set_xlabel("energy (keV)")
    bottom.legend(loc="upper right", fontsize=8)
    for name, e, _ in LINES:
        if name in lines_to_mark:
            for ax in (top, bottom):
                ax.axvline(e, color="tab:red", lw=0.5, ls="--", alpha=0.6)
            top.text(e, top.get_ylim()[1], name, rotation=90, fontsize=7, va="top", ha="right", color="tab:red")
    bottom.set_xlim(0, 14)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def git_revision():
    try:
        rev = subprocess.run(["git", "-C", dr.ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(["git", "-C", dr.ROOT, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True)
        return rev.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")
    except OSError:
        return "unknown"


def rank_table(full, full_all):
    lines = ["| Poisson weights calibrated on | rank found (of at most %d) | noise sigma | Gavish-Donoho threshold | "
             "singular values (first 8) |" % full["options"]["rank"], "|---|---|---|---|---|"]
    for label, r in (("the first %d spectra (default)" % full["options"]["calibration_spectra"], full),
                     ("all %d spectra" % full_all["spectra"], full_all)):
        s = ", ".join("%.0f" % v for v in r["singular_values"][:8])
        lines.append("| %s | **%d** | %.3f | %.1f | %s |" % (label, r["rank"], r["noise_sigma"],
                                                              r["rank_threshold"], s))
    return lines


def line_table(energy, mean_spectrum, eigenspectra):
    lines = ["| spectrum | strongest features (sign in the eigenspectrum, nearest EDS line within %.2f keV) |"
             % MATCH_TOLERANCE_KEV, "|---|---|"]
    lines.append("| mean | %s |" % describe_peaks(mean_spectrum, energy, False, **MEAN_PEAKS))
    for c, e in enumerate(eigenspectra):
        lines.append("| component %d | %s |" % (c + 1, describe_peaks(e, energy, signed=True)))
    return lines


def deviance_table(rows):
    raw = rows[0]["dev"]
    lines = ["| x1 estimated by | rank | mean deviance per pixel vs x2 (mu floor %.2g) | vs raw | same, floor %.2g |"
             % (MU_FLOOR, MU_FLOOR_ALT), "|---|---|---|---|---|"]
    for r in rows:
        lines.append("| %s | %s | %.1f | %+.1f%% | %.1f |" % (r["method"], r["rank"], r["dev"],
                                                             100.0 * (r["dev"] / raw - 1.0), r["dev_alt"]))
    return lines


def write_markdown(path, args, revision, counts, rank_runs, energy, mean_spectrum, eigenspectra, rows, png_name):
    full, full_all, weights = rank_runs
    n, d = counts.shape
    best = min(rows, key=lambda r: r["dev"])
    text = [
        "# The streaming decomposition on measured data: FePt core-shell STEM-EDS",
        "",
        "Generated by `/usr/bin/python3 tools/python/real_data_report.py` (%s, revision %s); do not edit by hand."
        % (datetime.date.today().isoformat(), revision),
        "",
        "Data: `../shared/data/%s`, %d spectra (64 x 64 pixels) x %d channels, 0.16 + 0.02 keV x channel, "
        "%.0f counts per pixel on average (Rossouw et al. 2015; NIST hyperspy_tutorial, see its README)."
        % (os.path.basename(args.data), n, d, counts.sum() / n),
        "Model: `specwatch-decompose` (the service's operators offline), frames of 64 spectra, block 32, "
        "oversample 8, every spectrum learnt, no forgetting.",
        "",
        "## (a) Automatic rank (Gavish-Donoho, Poisson weighting)",
        "",
        *rank_table(full, full_all),
        "",
        "With the default weights (b calibrated on the first %d spectra, then refreshed from every spectrum "
        "learnt after 1, 2, 4 ... times that many, the model re-expressed each time) the threshold keeps %d of "
        "at most %d components; with b calibrated on every spectrum at once it keeps %d. Before the refresh "
        "existed, b frozen at the first 256 spectra (4 scan lines, which under-represent Pt) weighed the Pt "
        "lines up to 9x too much, and the rank came out 16. After mean centring, p phases mixing with "
        "abundances summing to 1 span p - 1 components."
        % (full["options"]["calibration_spectra"], full["rank"], full["options"]["rank"], full_all["rank"]),
        "",
        "How far the default run's final b is from b of the whole scan: b_default / b_all is below 1/2 in %d "
        "channels "
        "(smallest %.2f), near %s; those channels' weighted variance is inflated by 1 / (b_default / b_all)."
        % (weights["channels"], weights["min_ratio"], weights["lines"] or "no identified line"),
        "",
        "## (b) Lines in the mean spectrum and the top eigenspectra",
        "",
        "Eigenspectra in counts (the weighted basis times sqrt(b)), from the default run, each oriented so its "
        "strongest entry is positive; opposite signs within a component vary against each other (e.g. core vs "
        "shell).",
        "",
        *line_table(energy, mean_spectrum, eigenspectra),
        "",
        "![mean spectrum and eigenspectra](%s)" % png_name,
        "",
        "## (c) Held-out Poisson deviance (thinning)",
        "",
        "x1 ~ Binomial(x, 1/2) with seed %d, x2 = x - x1: independent Poisson halves with the same mean. The model "
        "is learnt on x1 and denoises x1; the table scores each estimate mu of x1's mean against x2 by the mean "
        "per-pixel Poisson deviance 2 sum_j [x2 ln(x2/mu) - (x2 - mu)] (a zero count contributes 2 mu). mu is "
        "floored at %.2g counts (as the service's deviance score), which is what a raw zero costs where x2 has a "
        "count; the last column repeats the scores with a floor of %.2g to show how much the scores "
        "depend on it. Lower is better." % (args.seed, MU_FLOOR, MU_FLOOR_ALT),
        "",
        *deviance_table(rows),
        "",
        "Lowest held-out deviance: %s, rank %s (%.1f, %+.1f%% vs raw). \"weighted (Poisson)\" rows use the "
        "default calibration; the automatic rank of plain PCA is not meaningful (its noise is not uniform)."
        % (best["method"], best["rank"], best["dev"], 100.0 * (best["dev"] / rows[0]["dev"] - 1.0)),
        "",
    ]
    with open(path, "w") as f:
        f.write("\n".join(text))


def main():
    args = parse_args()
    revision = git_revision()  # before this run rewrites the tracked report and figure
    counts = np.load(args.data)
    counts = counts.reshape(-1, counts.shape[-1])
    n, d = counts.shape
    energy, _ = energy_axis(args.data, d)
    with tempfile.TemporaryDirectory() as workdir:
        model_path = os.path.join(workdir, "model.npz")
        full = dr.decompose(args.bin, "--input", args.data, *model_args(args, "poisson", args.max_rank, True),
                            "--write-model", model_path)
        model = dict(np.load(model_path))
        model_all_path = os.path.join(workdir, "model_all.npz")
        full_all = dr.decompose(args.bin, "--input", args.data,
                                *model_args(args, "poisson", args.max_rank, True, calibration=n),
                                "--write-model", model_all_path)
        weights = underweighted(model["channel_scale"], np.load(model_all_path)["channel_scale"], energy)
        x1, x2 = thin(counts, args.seed)
        x1_path = os.path.join(workdir, "x1.npy")
        np.save(x1_path, x1.astype(np.uint32))
        rows = deviance_rows(args, x1_path, x1, x2, workdir)
    mean_spectrum = counts.mean(axis=0)
    eigenspectra = [oriented(e) for e in model["eigenspectra_counts"][:EIGENSPECTRA_SHOWN]]
    peaks = strongest_peaks(mean_spectrum, energy, **MEAN_PEAKS)
    peaks += [j for e in eigenspectra for j in strongest_peaks(e, energy, count=5, min_fraction=0.1)]
    marked = {nearest_line(energy[j])[0] for j in peaks}
    os.makedirs(args.docs, exist_ok=True)
    png_name = "real_data_fept.png"
    plot(os.path.join(args.docs, png_name), energy, mean_spectrum, eigenspectra, marked)
    write_markdown(os.path.join(args.docs, "real_data.md"), args, revision, counts, (full, full_all, weights), energy,
                   mean_spectrum, eigenspectra, rows, png_name)
    print("\n".join(rank_table(full, full_all) + [""] + line_table(energy, mean_spectrum, eigenspectra) + [""]
                    + deviance_table(rows)))


if __name__ == "__main__":
    main()
