#!/usr/bin/python3
"""A minimal microscope-side consumer of specwatch's acquisition advice (topic "advice", proto/README.md 3.13).

It keeps a scan plan for the next pass, one entry per tile of the scan, and applies each advice it receives:
  skip      the tile leaves the plan (its dose budget is spent, or beam damage has begun there);
  revisit   the tile moves to the front of the plan, at the advised (higher) dose per spectrum;
  continue  the tile stays in the plan at the nominal dose.
It prints each advice and the resulting plan; with --json, one JSON object per advice on stdout (the last one is
the plan to acquire). A real instrument script would send the plan to the microscope instead of printing it.

    microscope_advice.py --endpoint >tcp://127.0.0.1:5556 [--seconds S] [--idle-exit-s S] [--json]
    microscope_advice.py --endpoint ... --query --control >tcp://127.0.0.1:5557   (ask once, print, exit)

Exit status: 0 (also when no advice came: the plan is then empty and says so), 2 bad usage.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import specwatch_client as sc  # noqa: E402


class ScanPlan:
    """The tiles to acquire in the next pass, in order, each with the dose per spectrum to use."""

    def __init__(self):
        self.entries = []  # dicts: tile_x, tile_y, x0, y0, x1, y1, dose_e_per_A2, why
        self.skipped = []
        self.version = 0

    def apply(self, advice) -> None:
        codes = sc.advice_codes(advice)
        why = {(t.tile_x, t.tile_y): t.reason for t in advice.tiles}
        revisits, normal, skipped = [], [], []
        for ty in range(advice.tiles_y):
            for tx in range(advice.tiles_x):
                tile = {"tile_x": tx, "tile_y": ty, "x0": tx * advice.tile_px, "y0": ty * advice.tile_px,
                        "x1": min(advice.width, (tx + 1) * advice.tile_px) - 1,
                        "y1": min(advice.height, (ty + 1) * advice.tile_px) - 1}
                code = sc.ADVICE_CODES[int(codes[ty, tx])]
                if code == "skip":
                    skipped.append(dict(tile, why=why.get((tx, ty), "")))
                elif code == "revisit":
                    revisits.append(dict(tile, dose_e_per_A2=advice.revisit_dose_e_per_A2, why=why.get((tx, ty), "")))
                else:
                    normal.append(dict(tile, dose_e_per_A2=advice.dose_per_spectrum_e_per_A2, why=""))
        self.entries = revisits + normal  # revisits first: spend the dose where something is happening
        self.skipped = skipped
        self.version = advice.version

    def summary(self) -> dict:
        return {"version": self.version, "revisit": [(e["tile_x"], e["tile_y"]) for e in self.entries if e["why"]],
                "skip": [(e["tile_x"], e["tile_y"]) for e in self.skipped],
                "tiles_planned": len(self.entries), "plan": self.entries}


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--endpoint", default=sc.DEFAULT_PUBLISH_ENDPOINT, help="specwatch's publish socket")
    p.add_argument("--seconds", type=float, default=0.0, help="stop after this long (0: until interrupted)")
    p.add_argument("--idle-exit-s", type=float, default=0.0,
                   help="stop when no advice came for this long after a first one (0: never)")
    p.add_argument("--json", action="store_true", help="one JSON object per advice on stdout")
    p.add_argument("--query", action="store_true", help="ask the control socket once (COMMAND_ADVICE) and exit")
    p.add_argument("--control", default=sc.DEFAULT_CONTROL_ENDPOINT, help="control socket, for --query")
    return p.parse_args(argv)


def report(plan: ScanPlan, advice, series_id: str, as_json: bool) -> None:
    if as_json:
        out = plan.summary()
        out.update({"series_id": series_id, "trigger": advice.trigger, "scan_pass": advice.scan_pass,
                    "revisit_dose_e_per_A2": advice.revisit_dose_e_per_A2})
        print(json.dumps(out), flush=True)
        return
    print(f"advice {advice.version} ({advice.trigger}, series {series_id}): {advice.revisit_tiles} revisit, "
          f"{advice.skip_tiles} skip, {advice.continue_tiles} continue; revisits at "
          f"{advice.revisit_dose_e_per_A2:.4g} e-/A^2 per spectrum", flush=True)
    for e in plan.entries:
        if e["why"]:
            print(f"  revisit tile ({e['tile_x']}, {e['tile_y']}) x {e['x0']}..{e['x1']} y {e['y0']}..{e['y1']} "
                  f"({e['why']})")
    for e in plan.skipped:
        print(f"  skip    tile ({e['tile_x']}, {e['tile_y']}) ({e['why']})")


def main(argv=None) -> int:
    args = parse_args(argv if argv is not None else sys.argv[1:])
    plan = ScanPlan()
    if args.query:
        with sc.ControlClient(args.control) as control:
            try:
                advice = control.advice()
            except sc.ControlError as e:
                print(f"no advice: {e}", file=sys.stderr)
                return 0
        plan.apply(advice)
        report(plan, advice, "", args.json)
        return 0
    deadline = time.monotonic() + args.seconds if args.seconds > 0 else None
    last = None
    with sc.EventSubscriber(args.endpoint, topics=("advice",)) as sub:
        while True:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            if last is not None and args.idle_exit_s > 0 and now - last >= args.idle_exit_s:
                break
            ev = sub.receive(timeout_s=0.2)
            if ev is None or ev.kind != "advice":
                continue
            last = time.monotonic()
            plan.apply(ev.body)
            report(plan, ev.body, ev.series_id, args.json)
    if last is None and not args.json:
        print("no advice received: the plan is empty")
    return 0


if __name__ == "__main__":
    sys.exit(main())
