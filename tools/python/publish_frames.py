#!/usr/bin/python3
"""Stream spectra to specwatch as detector frames: a synthetic spectrum image, or a .npy file.

Examples:
  # the measured STEM-EDS spectrum image, one scan line (64 spectra) per frame, 20 frames/s
  publish_frames.py --npy /work/shared/data/eds_si_FePt_core_shell_64x64x992.npy --frame-rate 20

  # synthetic 32x32 image of 512 channels, 4 passes, to a service that binds a PULL socket
  publish_frames.py --synthetic 32x32x512 --passes 4 --endpoint '>tcp://127.0.0.1:5555' --socket push

A .npy array is (y, x, channel) (a spectrum image, scan shape x-width by y-height), (n, channel) (one scan
line of n positions) or (channel,) (one spectrum). Axis and metadata are read from a .json sidecar next to
the file when there is one (as for the shared EDS data set); command-line options override them.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import specwatch_client as sc  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--npy", metavar="PATH", help="spectra from a NumPy .npy file")
    src.add_argument("--synthetic", metavar="HxWxC", help="synthetic spectrum image, e.g. 32x32x512 (y, x, channel)")
    p.add_argument("--endpoint", default=sc.DEFAULT_FRAMES_ENDPOINT,
                   help="frame socket: '@tcp://...' bind (default %(default)s), '>tcp://...' connect")
    p.add_argument("--socket", choices=("pub", "push"), default="pub", help="socket type (default %(default)s)")
    p.add_argument("--wait-subscriber-s", type=float, default=10.0, metavar="S",
                   help="pub: wait up to S seconds for a subscriber before sending (default %(default)s; 0: don't)")
    p.add_argument("--series-id", help="series id (default: time-based)")
    p.add_argument("--modality", choices=sorted(sc.MODALITIES), help="default: sidecar, else 'other'")
    p.add_argument("--payload-type", choices=sorted(sc.PAYLOAD_TYPES),
                   help="wire element type (default: the array's if uint16/uint32/float32, uint32 for other "
                        "integers, float32 for floats)")
    p.add_argument("--energy-offset", type=float, help="energy of channel 0 (default: sidecar, else 0)")
    p.add_argument("--energy-dispersion", type=float, help="energy per channel (default: sidecar, else 1)")
    p.add_argument("--energy-unit", help="'eV', 'keV', 'deg', 'cm-1' (default: sidecar, else 'channel')")
    p.add_argument("--dwell-s", type=float, default=0.0, help="dwell time per spectrum [s]")
    p.add_argument("--beam-current-pA", type=float, default=0.0, help="beam current [pA]")
    p.add_argument("--pixel-area-A2", type=float, help="pixel area [Å²] (default: from the sidecar pixel size)")
    p.add_argument("--spectra-per-frame", type=int, help="default: one scan line (the scan width)")
    p.add_argument("--passes", type=int, default=1, help="passes over the scan (default %(default)s)")
    p.add_argument("--frame-rate", type=float, default=0.0, help="frames per second (default: as fast as possible)")
    p.add_argument("--max-frames", type=int, help="stop after this many frames")
    p.add_argument("--explicit-positions", action="store_true",
                   help="send (x, y) per spectrum instead of start_index")
    p.add_argument("--no-series-start", action="store_true", help="don't send SeriesStart (late-joiner test)")
    p.add_argument("--no-series-end", action="store_true", help="don't send SeriesEnd")
    p.add_argument("--counts-per-spectrum", type=float, default=200.0, help="synthetic: mean total counts")
    p.add_argument("--seed", type=int, default=0, help="synthetic: random seed")
    p.add_argument("--linger-s", type=float, default=5.0, help="time to flush queued frames at exit")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    return p.parse_args(argv)


def read_sidecar(npy_path):
    """Energy axis, modality and pixel area from <name>.json (format of /work/shared/data), or {}."""
    path = os.path.splitext(npy_path)[0] + ".json"
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        meta = json.load(f)
    out = {}
    axes = meta.get("axes_in_array_order", [])
    signal = [a for a in axes if not a.get("navigate", True)]
    if signal:
        out["energy_axis"] = (signal[0].get("offset", 0.0), signal[0].get("scale", 1.0), signal[0].get("units", ""))
    nav = [a for a in axes if a.get("navigate")]
    to_A = {"nm": 10.0, "Å": 1.0, "A": 1.0, "pm": 0.01, "um": 1e4, "µm": 1e4}
    if len(nav) == 2 and all(a.get("units") in to_A for a in nav):
        out["pixel_area_A2"] = float(np.prod([a["scale"] * to_A[a["units"]] for a in nav]))
    signal_type = str(meta.get("metadata", {}).get("Signal", {}).get("signal_type", "")).upper()
    for name in ("EELS", "EDS", "XRD", "RAMAN"):
        if name in signal_type:
            out["modality"] = name.lower()
    return out


def main(argv=None):
    args = parse_args(argv)
    meta = {}
    rng = np.random.default_rng(args.seed)
    if args.npy:
        cube = np.load(args.npy, mmap_mode="r")
        meta = read_sidecar(args.npy)
        if cube.ndim == 1:
            cube = cube.reshape(1, 1, -1)
        elif cube.ndim == 2:
            cube = cube.reshape(1, *cube.shape)
        elif cube.ndim != 3:
            sys.exit(f"{args.npy}: expected (y, x, channel), (n, channel) or (channel,), got {cube.shape}")
        mean = None
    else:
        try:
            height, width, channels = (int(v) for v in args.synthetic.lower().split("x"))
        except ValueError:
            sys.exit(f"--synthetic {args.synthetic!r}: expected HEIGHTxWIDTHxCHANNELS, e.g. 32x32x512")
        mean = sc.synthetic_spectrum_image(height, width, channels, counts_per_spectrum=args.counts_per_spectrum,
                                           seed=args.seed)
        cube = None
    height, width, channels = (cube if cube is not None else mean).shape

    if args.payload_type:
        payload_type = args.payload_type
    elif cube is None:
        payload_type = "uint16" if args.counts_per_spectrum < 2000 else "uint32"
    elif cube.dtype.name in sc.PAYLOAD_TYPES:
        payload_type = cube.dtype.name
    else:
        payload_type = "float32" if cube.dtype.kind == "f" else "uint32"
    axis = meta.get("energy_axis", (0.0, 1.0, "channel"))
    axis = (axis[0] if args.energy_offset is None else args.energy_offset,
            axis[1] if args.energy_dispersion is None else args.energy_dispersion,
            axis[2] if args.energy_unit is None else args.energy_unit)
    modality = args.modality or meta.get("modality", "other")
    pixel_area = args.pixel_area_A2 if args.pixel_area_A2 is not None else meta.get("pixel_area_A2", 0.0)
    per_frame = args.spectra_per_frame or width
    if per_frame <= 0:
        sys.exit("--spectra-per-frame must be > 0")

    publisher = sc.FramePublisher(args.endpoint, args.socket, linger_s=args.linger_s)
    if not args.quiet:
        print(f"{args.socket} on {', '.join(publisher.endpoints)}: {height}x{width} scan, {channels} channels, "
              f"{payload_type}, {per_frame} spectra/frame, {args.passes} pass(es)", file=sys.stderr)
    if args.socket == "pub" and args.wait_subscriber_s > 0:
        if not publisher.wait_for_subscribers(args.wait_subscriber_s):
            print(f"no subscriber after {args.wait_subscriber_s:g} s; sending anyway", file=sys.stderr)
    series_kwargs = dict(modality=modality, energy_axis=axis, scan_shape=(width, height),
                         dwell_s=args.dwell_s, beam_current_pA=args.beam_current_pA, pixel_area_A2=pixel_area)
    if not args.no_series_start:
        publisher.start_series(args.series_id, channel_count=channels, payload_type=payload_type,
                               passes=args.passes, **series_kwargs)
    series_id = args.series_id or publisher.series_id or time.strftime("series-%Y%m%dT%H%M%S")

    t0 = time.monotonic()
    frames = spectra_total = 0
    stop = False
    try:
        for pass_index in range(args.passes):
            if cube is not None:
                image = cube
            else:
                image = rng.poisson(mean)
            flat = image.reshape(height * width, channels)
            for start in range(0, height * width, per_frame):
                if args.max_frames is not None and frames >= args.max_frames:
                    stop = True
                    break
                block = np.asarray(flat[start:start + per_frame])
                index = pass_index * height * width + start
                kwargs = {}
                if args.explicit_positions:
                    kwargs["positions"] = sc.raster_positions(index, len(block), width, height)[:, :2]
                else:
                    kwargs["start_index"] = index
                if args.no_series_start:
                    kwargs.update(series_id=series_id, payload_type=payload_type, **series_kwargs)
                if args.frame_rate > 0:
                    delay = t0 + frames / args.frame_rate - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                publisher.send_frame(block, **kwargs)
                frames += 1
                spectra_total += len(block)
                if not args.quiet and sys.stderr.isatty():
                    print(f"\rframe {frames} pass {pass_index}", end="", file=sys.stderr)
            if stop:
                break
        if not args.no_series_end:
            publisher.end_series()
    except KeyboardInterrupt:
        pass
    finally:
        elapsed = time.monotonic() - t0
        publisher.close()
    if not args.quiet:
        rate = spectra_total / elapsed if elapsed > 0 else float("inf")
        print(f"\rsent {frames} frames, {spectra_total} spectra in {elapsed:.2f} s ({rate:.0f} spectra/s), "
              f"series {series_id}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
