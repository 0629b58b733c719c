#!/usr/bin/python3
"""Print what specwatch publishes: one line per event, then per-topic counts, gaps and restarts.

Examples:
  subscribe_events.py                               # denoised, snapshot, status from 127.0.0.1:5556
  subscribe_events.py --topic status --count 5      # five status messages, then exit
  subscribe_events.py --all --json --seconds 10     # every topic, one JSON object per line, for 10 s

Exit status: 0; 1 when --count was given and fewer events arrived (within --seconds / --idle-s).
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
    p.add_argument("--endpoint", default=sc.DEFAULT_PUBLISH_ENDPOINT,
                   help="publish socket: '>tcp://...' connect (default %(default)s), '@tcp://...' bind")
    p.add_argument("--topic", action="append", metavar="TOPIC",
                   help=f"topic to receive, repeatable (default: {', '.join(sc.TOPICS)})")
    p.add_argument("--all", action="store_true", help="every topic, reserved ones included")
    p.add_argument("--json", action="store_true", help="one JSON object per event (the Envelope in proto3 JSON)")
    p.add_argument("--payload", action="store_true", help="with --json: include the payload as nested lists")
    p.add_argument("--count", type=int, help="stop after N events")
    p.add_argument("--seconds", type=float, help="stop after S seconds")
    p.add_argument("--idle-s", type=float, help="stop when nothing arrived for S seconds")
    p.add_argument("--quiet", action="store_true", help="only the summary")
    return p.parse_args(argv)


def _stamp(t):
    return time.strftime("%H:%M:%S", time.localtime(t)) + f".{int(t * 1000) % 1000:03d}"


def describe(event):
    """One human-readable line."""
    marks = []
    if event.restart:
        marks.append(f"RESTART epoch={event.epoch:016x}")
    if event.missed:
        marks.append(f"GAP {event.missed} missed")
    if event.duplicate:
        marks.append("DUPLICATE")
    head = f"{_stamp(event.receive_time_s)} {event.topic:<8} #{event.sequence}"
    if event.series_id:
        head += f" series={event.series_id}"
    body, kind = event.body, event.kind
    if kind == "denoised":
        resid = np.median(body.residual_norm) if len(body.residual_norm) else float("nan")
        text = (f"frame={body.frame_number} spectra={body.spectrum_count}x{body.channel_count} rank={body.rank} "
                f"model_version={body.model_version} pass={body.scan_pass} residual_median={resid:.3g}")
        if event.payload is not None and event.payload.size:
            text += f" counts_mean={float(event.payload.sum(axis=1).mean()):.1f}"
    elif kind == "snapshot":
        sv = ", ".join(f"{v:.3g}" for v in list(body.singular_values)[:4])
        ev = sum(body.explained_variance)
        text = (f"rank={body.rank} channels={body.channel_count} reason={body.reason} "
                f"model_version={body.model_version} spectra_seen={body.spectra_seen:.0f} "
                f"explained={ev:.3f} sv=[{sv}{', ...' if body.rank > 4 else ''}]")
    elif kind == "rank_change":
        sv = ", ".join(f"{v:.4g}" for v in body.singular_values)
        text = (f"rank {body.old_rank} -> {body.new_rank} model_version={body.model_version} "
                f"spectra_seen={body.spectra_seen:.0f} tau={body.rank_threshold:.4g} sigma={body.noise_sigma:.4g} "
                f"sv[{body.first_index}:]=[{sv}]")
    elif kind == "residual_map":
        text = (f"pass={body.scan_pass} scan={body.width}x{body.height} {body.statistic} closed_by={body.closed_by} "
                f"scored={body.positions_scored}/{body.width * body.height} median={body.median:.3g} "
                f"robust_sigma={body.robust_sigma:.3g} outliers_5sigma={body.outliers} max={body.max:.3g}")
    elif kind == "novelty_event":
        top = ", ".join(f"{c.energy:.4g}({c.excess_deviance:+.1f})" for c in list(body.contributions)[:4])
        text = (f"NOVEL at ({body.position.x}, {body.position.y}) pass={body.position.scan_pass} "
                f"frame={body.frame_number} region={body.region_id} trigger={body.trigger} "
                f"z={body.deviance_z:.2f}/{body.deviance_threshold:.2f} T2={body.hotelling_t2:.1f}/"
                f"{body.hotelling_threshold:.1f} p={body.tail_probability:.2g} energies=[{top}]")
    elif kind == "novelty_region":
        text = (f"region {body.region_id}: area={body.area_positions} spectra={body.spectra} "
                f"centroid=({body.centroid_x:.1f}, {body.centroid_y:.1f}) box=({body.x_min}, {body.y_min})-"
                f"({body.x_max}, {body.y_max}) max_z={body.max_deviance_z:.2f}"
                + (f" merged={list(body.merged_region_ids)}" if body.merged_region_ids else ""))
    elif kind == "novelty_calibration":
        text = (f"novelty {body.state} ({body.reason}) alpha={body.false_alarm_rate:g} "
                f"threshold z={body.deviance_threshold:.3f} T2={body.hotelling_threshold:.3f}"
                + (" reference_region" if body.reference_region else ""))
    elif kind == "drift_event":
        text = (f"DRIFT {body.kind} {body.magnitude:.4g} {body.unit} confidence={body.confidence:.3g} "
                f"onset_spectrum={body.onset_spectrum} detected_spectrum={body.detected_spectrum}")
        if body.kind == "energy":
            text += (f" shift={body.shift_energy:.4g} {body.energy_axis.unit} total={body.total_shift_channels:.3f} ch "
                     f"corrected={body.corrected}")
    elif kind == "status":
        text = (f"state={body.state} frames={body.frames_received} spectra={body.spectra_received} "
                f"published={body.spectra_published} rejected={body.frames_rejected}f/{body.spectra_rejected}s "
                f"gaps={body.sequence_gaps} in_flight={body.frames_in_flight} rank={body.rank} "
                f"model_version={body.model_version} uptime={body.uptime_s:.0f}s")
    else:
        size = event.raw_payload.nbytes if event.raw_payload is not None else 0
        text = f"body={kind or 'none'} payload_bytes={size}"
    return " ".join([head] + [f"[{m}]" for m in marks] + [text])


def to_json(event, with_payload):
    from google.protobuf import json_format
    out = {"topic": event.topic, "receive_time_s": event.receive_time_s, "missed": event.missed,
           "restart": event.restart, "first": event.first,
           "envelope": json_format.MessageToDict(event.envelope, preserving_proto_field_name=True)}
    if event.payload is not None:
        out["payload_shape"] = list(event.payload.shape)
        if with_payload:
            out["payload"] = event.payload.tolist()
    return json.dumps(out)


def summary(subscriber, elapsed):
    lines = [f"{elapsed:.1f} s, restarts seen: {subscriber.restarts}, malformed: {subscriber.malformed}"]
    for topic, st in sorted(subscriber.stats.items()):
        lines.append(f"  {topic:<8} received={st.received} missed={st.missed} gaps={st.gaps} "
                     f"restarts={st.restarts} duplicates={st.duplicates} last_sequence={st.last_sequence}")
    if not subscriber.stats:
        lines.append("  nothing received")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    topics = None if args.all else (args.topic or sc.TOPICS)
    subscriber = sc.EventSubscriber(args.endpoint, topics)
    received = 0
    t0 = time.monotonic()
    try:
        for event in subscriber.events(timeout_s=args.idle_s, count=args.count, duration_s=args.seconds):
            received += 1
            if not args.quiet:
                print(to_json(event, args.payload) if args.json else describe(event), flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        subscriber.close()
    print(summary(subscriber, time.monotonic() - t0), file=sys.stderr)
    return 1 if args.count is not None and received < args.count else 0


if __name__ == "__main__":
    sys.exit(main())
