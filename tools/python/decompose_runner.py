"""Helpers shared by bench_decomposition.py and real_data_report.py: run specwatch-decompose and read its JSON,
weight counts as the model does, and compare subspaces. numpy only."""

import json
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def default_bin_dir():
    """$SPECWATCH_BIN, else <repo>/build/bin (where tools/build.sh puts the executables)."""
    return os.environ.get("SPECWATCH_BIN", os.path.join(ROOT, "build", "bin"))


def decompose(bin_dir, *args):
    """Runs specwatch-decompose with `args`; returns its JSON report. Exits with its message on failure."""
    exe = os.path.join(bin_dir, "specwatch-decompose")
    if not os.path.exists(exe):
        sys.exit("%s not found: build it (cmake --build build --target specwatch-decompose) or pass --bin" % exe)
    r = subprocess.run([exe, *[str(a) for a in args]], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit("specwatch-decompose %s failed (exit %d): %s" % (" ".join(map(str, args)), r.returncode, r.stderr))
    if r.stderr:
        sys.stderr.write(r.stderr)
    return json.loads(r.stdout)


def poisson_weighted(counts, channel_scale):
    """x / sqrt(a_i b_j), float32: a_i = spectrum total floored at 1, b_j = channel_scale**2 (the model's)."""
    totals = np.maximum(counts.sum(axis=1, keepdims=True, dtype=np.float64), 1.0)
    scale = (np.sqrt(totals) * channel_scale.astype(np.float64)[None, :]).astype(np.float32)
    return counts.astype(np.float32) / scale


def batch_basis(weighted, components):
    """Top `components` right singular vectors (rows, k x D) and singular values of the centred data, in float64
    from the eigen-decomposition of the D x D covariance."""
    x = weighted.astype(np.float64)
    x -= x.mean(axis=0)
    eigenvalues, eigenvectors = np.linalg.eigh(x.T @ x)
    top = np.argsort(eigenvalues)[::-1][:components]
    return eigenvectors[:, top].T, np.sqrt(np.maximum(eigenvalues[top], 0.0))


def max_angle_deg_by_rank(reference, basis, ranks):
    """Largest principal angle (degrees) between the spans of the first k rows of `reference` and of `basis`
    (orthonormalised), for each k in `ranks`."""
    angles = []
    for k in ranks:
        a, _ = np.linalg.qr(np.asarray(reference[:k], np.float64).T)
        b, _ = np.linalg.qr(np.asarray(basis[:k], np.float64).T)
        cosines = np.linalg.svd(a.T @ b, compute_uv=False)
        angles.append(float(np.degrees(np.arccos(np.clip(cosines.min(), -1.0, 1.0)))))
    return angles
