#!/usr/bin/python3
"""The first pass over a real spectrum image through the real service (issue 15, §4): how good the denoised
output is in the pass the microscopist watches, and whether foreign spectra injected at a few pixels are flagged
in that pass. One command (fixed seeds), against a built tree:

    /usr/bin/python3 tools/python/first_pass_real.py [--bin build/bin] [--rate 10000] [--inject 8] [--config F]

The FePt STEM-EDS map of ../shared/data (64x64 pixels, 992 channels) is thinned, x1 ~ Binomial(x, 1/2), x2 = x - x1
(docs/science.md §10). x1 is sent once, one scan line per frame, at --rate spectra/s, to a specwatch started here
on free loopback ports with its defaults (or --config); the denoised spectra it publishes for that one pass are
scored against x2 by the mean per-pixel Poisson deviance (mu floored at 0.001 counts, as docs/real_data.md's
last column: raw x1 461.0, the batch Poisson-weighted PCA 171.8). Spectra published before any model existed
(rank 0, the payload as received) are counted.

Then the same with --inject pixels of x1 given a foreign line (a Gaussian peak of 0.1 keV FWHM at 4.51 keV, Ti Ka,
where the map has none, holding 40 % of the pixel's counts, ~60 counts on ~95): novelty events (live or retrospective) at those
pixels and elsewhere. Prints one JSON object.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import publish_frames  # noqa: E402
import specwatch_client as sc  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(os.path.dirname(ROOT), "shared", "data", "eds_si_FePt_core_shell_64x64x992.npy")
MU_FLOOR = 0.001
FOREIGN_KEV, FOREIGN_FWHM_KEV, FOREIGN_FRACTION = 4.51, 0.10, 0.40


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mean_deviance(x2, mu, floor=MU_FLOOR):
    mu = np.maximum(mu.astype(np.float64), floor)
    x2 = x2.astype(np.float64)
    log_term = np.where(x2 > 0, x2 * np.log(np.where(x2 > 0, x2, 1.0) / mu), 0.0)
    return float((2.0 * (log_term - (x2 - mu))).sum(axis=1).mean())


def run_pass(bin_dir, cube, meta, rate, config, timeout_s=120.0):
    """Sends `cube` (y, x, channel) once through a fresh specwatch; returns (denoised [n, channels], rank per
    spectrum, novelty events as (x, y, retrospective, z), status)."""
    height, width, channels = cube.shape
    ports = {k: free_port() for k in ("frames", "publish", "control", "metrics")}
    cmd = [os.path.join(bin_dir, "specwatch"), "--frames", ">tcp://127.0.0.1:%d" % ports["frames"],
           "--publish", "@tcp://127.0.0.1:%d" % ports["publish"], "--control", "@tcp://127.0.0.1:%d" % ports["control"],
           "--metrics", "127.0.0.1:%d" % ports["metrics"]]
    if config:
        cmd += ["--config", config]
    log = tempfile.TemporaryFile()
    svc = subprocess.Popen(cmd, stdout=log, stderr=log)
    try:
        sub = sc.EventSubscriber(">tcp://127.0.0.1:%d" % ports["publish"], topics=("denoised", "novelty"))
        control = sc.ControlClient(">tcp://127.0.0.1:%d" % ports["control"])
        publisher = sc.FramePublisher("@tcp://127.0.0.1:%d" % ports["frames"], "pub")
        publisher.wait_for_subscribers(10.0)
        time.sleep(0.3)
        axis = meta.get("energy_axis", (0.0, 1.0, "channel"))
        publisher.start_series("first-pass", channel_count=channels, payload_type="uint32", passes=1,
                               modality=meta.get("modality", "eds"), energy_axis=tuple(axis),
                               scan_shape=(width, height))
        flat = cube.reshape(height * width, channels)
        t0 = time.monotonic()
        for start in range(0, height * width, width):
            delay = t0 + start / rate - time.monotonic() if rate > 0 else 0
            if delay > 0:
                time.sleep(delay)
            publisher.send_frame(flat[start:start + width], start_index=start)
        publisher.end_series()
        n = height * width
        denoised = np.full((n, channels), np.nan, dtype=np.float32)
        rank = np.full(n, -1)
        live_z = np.full(n, np.nan)
        events = []
        # Until 2 s without a message (the pass-end events follow the last frame within milliseconds).
        for ev in sub.events(timeout_s=2.0, duration_s=timeout_s):
            if ev.kind == "denoised":
                b = ev.body
                idx = np.array([p.y * width + p.x for p in b.positions])
                denoised[idx] = ev.payload
                rank[idx] = b.rank
                if len(b.deviance_z) == len(idx):
                    live_z[idx] = np.asarray(b.deviance_z)
            elif ev.kind == "novelty_event":
                b = ev.body
                events.append((b.position.x, b.position.y, bool(b.retrospective), float(b.deviance_z)))
        status = control.status()
        publisher.close()
        sub.close()
        control.close()
        return denoised, rank, live_z, events, status
    finally:
        svc.terminate()
        svc.wait(timeout=30)


def inject(x1, energy_keV, count, seed):
    """x1 with `count` pixels (seeded) given a foreign Gaussian line holding FOREIGN_FRACTION of their counts."""
    rng = np.random.default_rng(seed)
    height, width, _ = x1.shape
    pixels = rng.choice(height * width, size=count, replace=False)
    sigma = FOREIGN_FWHM_KEV / 2.3548
    line = np.exp(-0.5 * ((energy_keV - FOREIGN_KEV) / sigma) ** 2)
    line /= line.sum()
    out = x1.copy()
    flat = out.reshape(height * width, -1)
    for p in pixels:
        total = flat[p].sum()
        flat[p] += rng.poisson(line * total * FOREIGN_FRACTION / (1 - FOREIGN_FRACTION))
    return out, sorted(int(p) for p in pixels)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", default=os.path.join(ROOT, "build", "bin"))
    p.add_argument("--data", default=DATA)
    p.add_argument("--rate", type=float, default=10000.0, help="spectra/s; 0 = as fast as possible")
    p.add_argument("--inject", type=int, default=8, help="pixels given a foreign line; 0 = skip that run")
    p.add_argument("--config", help="specwatch config file (default: the service's defaults)")
    p.add_argument("--seed", type=int, default=0, help="thinning and injection seed")
    args = p.parse_args()

    counts = np.load(args.data).astype(np.int64)
    height, width, channels = counts.shape
    meta = publish_frames.read_sidecar(args.data)
    axis = meta["energy_axis"]
    energy = axis[0] + axis[1] * np.arange(channels)
    rng = np.random.default_rng(args.seed)
    x1 = rng.binomial(counts, 0.5)
    x2 = counts - x1
    report = {"data": os.path.basename(args.data), "rate_spectra_per_s": args.rate,
              "raw_x1_deviance": mean_deviance(x2.reshape(-1, channels), x1.reshape(-1, channels))}
    denoised, rank, _, events, status = run_pass(args.bin, x1, meta, args.rate, args.config)
    received = ~np.isnan(denoised[:, 0])
    report["first_pass"] = {
        "spectra_published": int(received.sum()),
        "spectra_as_received_rank_0": int((rank == 0).sum()),
        "deviance": mean_deviance(x2.reshape(-1, channels)[received], denoised[received]),
        "final_rank": int(rank[received][-1]) if received.any() else None,
        "novelty_events": len(events),
        "received_equals_published_plus_rejected":
            status.spectra_received == status.spectra_published + status.spectra_rejected,
    }
    if args.inject > 0:
        injected, pixels = inject(x1, energy, args.inject, args.seed + 1)
        _, _, live_z, events, status = run_pass(args.bin, injected, meta, args.rate, args.config)
        hit = {y * width + x for x, y, _, _ in events}
        report["injected"] = {
            "pixels": len(pixels),
            "flagged": sum(1 for q in pixels if q in hit),
            "retrospective_events": sum(1 for e in events if e[2]),
            "events_elsewhere": sum(1 for x, y, _, _ in events if y * width + x not in set(pixels)),
            "at_pixels": [{"spectrum": q, "live_z": None if np.isnan(live_z[q]) else round(float(live_z[q]), 1),
                           "event": [e[2:] for e in events if e[1] * width + e[0] == q]} for q in pixels],
        }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
