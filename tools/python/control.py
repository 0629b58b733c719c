#!/usr/bin/python3
"""Send one command to specwatch's control socket and print the reply.

Commands:
  status     print the service's Status
  reset      forget the model; learning restarts from the next frame
  freeze     stop model updates; denoising goes on with the frozen model
  resume     resume model updates
  snapshot   publish a model snapshot now (topic "snapshot")
  save_model PATH
             the service writes its current model to PATH (on its host); start a service from it
             with `specwatch --initial-model PATH`
  recalibrate [X_MIN,Y_MIN,X_MAX,Y_MAX]
             learn the novelty thresholds anew from the next nominal spectra (only those at scan positions
             in the given region, inclusive, when one is given)
  shutdown   stop taking frames, finish those in flight, exit

Exit status: 0 ok; 1 the service refused (ok = false); 2 bad usage; 3 no reply within --timeout-s.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import specwatch_client as sc  # noqa: E402

COMMANDS = ("status", "reset", "freeze", "resume", "snapshot", "save_model", "recalibrate", "shutdown")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=COMMANDS)
    p.add_argument("path", nargs="?", default="",
                   help="save_model: the file the service writes; recalibrate: X_MIN,Y_MIN,X_MAX,Y_MAX (optional)")
    p.add_argument("--endpoint", default=sc.DEFAULT_CONTROL_ENDPOINT,
                   help="control socket (default %(default)s)")
    p.add_argument("--timeout-s", type=float, default=5.0, help="reply timeout (default %(default)s)")
    p.add_argument("--json", action="store_true", help="print the ControlReply as proto3 JSON")
    return p.parse_args(argv)


def format_status(status):
    lines = [f"state             {status.state}",
             f"series            {status.series_id or '-'}"
             f"{'' if status.series_started or not status.series_id else ' (from frame headers, no SeriesStart)'}",
             f"uptime            {status.uptime_s:.1f} s",
             f"frames            received {status.frames_received}, rejected {status.frames_rejected}, "
             f"in flight {status.frames_in_flight}, missing (gaps) {status.sequence_gaps}",
             f"spectra           received {status.spectra_received}, rejected {status.spectra_rejected}, "
             f"published {status.spectra_published}, in model {status.spectra_in_model}",
             f"model             rank {status.rank}, version {status.model_version}",
             f"novelty           {status.novelty_state or 'off'}, threshold {status.novelty_threshold:.3f}, "
             f"flagged {status.novel_spectra}",
             f"drift             energy shift {status.energy_shift_channels:.3f} channels, "
             f"subspace angle {status.subspace_angle_deg:.2f} deg"]
    if status.published:
        lines.append("published         " + ", ".join(f"{t.topic} {t.published}" for t in status.published))
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    region = None
    if args.command == "recalibrate" and args.path:
        try:
            region = tuple(int(v) for v in args.path.split(","))
            if len(region) != 4:
                raise ValueError
        except ValueError:
            print("error: recalibrate takes X_MIN,Y_MIN,X_MAX,Y_MAX", file=sys.stderr)
            return 2
    elif (args.command == "save_model") != bool(args.path):
        print("error: a path is needed by save_model, and only by it", file=sys.stderr)
        return 2
    client = sc.ControlClient(args.endpoint, timeout_s=args.timeout_s)
    try:
        reply = client.request(args.command, path="" if region else args.path, reference_region=region)
    except sc.ControlTimeout as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    finally:
        client.close()
    if args.json:
        from google.protobuf import json_format
        print(json.dumps(json_format.MessageToDict(reply, preserving_proto_field_name=True,
                                                   including_default_value_fields=True), indent=1))
    else:
        print(f"{'ok' if reply.ok else 'REFUSED'}{': ' + reply.message if reply.message else ''}")
        if reply.HasField("status"):
            print(format_status(reply.status))
    return 0 if reply.ok else 1


if __name__ == "__main__":
    sys.exit(main())
