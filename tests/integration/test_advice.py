"""Issue 5, adaptive-acquisition advice end to end with real processes: specwatch-sim (EDS with a rare inclusion;
after the full passes a region revisited until it is over its dose budget) -> specwatch -> the microscope-side
consumer tools/python/microscope_advice.py, which applies the advice to its scan plan. The tiles over budget must
be skipped, the tiles holding the inclusion revisited; the control socket answers the same advice."""

import json
import os
import subprocess
import sys
import tempfile
import unittest

import numpy as np

from harness import BIN, ROOT, Service

import specwatch_client

W, H, PASSES, CHANNELS, TILE = 64, 64, 6, 256, 16
ROI = (0, 0, 31, 31)          # tiles (0..1, 0..1)
ROI_PASSES = 3
BUDGET_VISITS = 8
CURRENT_PA, DWELL_US = 50.0, 20.0
D = 1e-18 / 1.602176634e-19 * CURRENT_PA * DWELL_US  # e-/A^2 per spectrum, pixel 1 A


class AdviceTest(unittest.TestCase):
    def test_tiles_over_budget_are_skipped_and_tiles_with_the_inclusion_revisited(self):
        # Budget 8 D per position: positions outside the region end at 6 visits (2 D left, enough for a revisit at
        # twice the dose), those inside at 9 (the limit was reached at the 8th: spent). Novelty as in
        # test_novelty_events: the model learns the first pass, the thresholds come from the second (the guard
        # keeps the inclusion out of both), a false-alarm rate of 1e-5.
        svc = Service("--dose-budget", repr(BUDGET_VISITS * D), frames_socket="sub",
                      config_text='pca { block: 32 warmup_spectra: 256 calibration_spectra: 128 }\n'
                                  'model_updates: "all"\n'
                                  'novelty { calibration_spectra: 4096 min_model_spectra: 4096 false_alarm_rate: 1e-5 }\n'
                                  'advice { tile_px: %d min_interval_s: 0.2 }\n' % TILE)
        tmp = tempfile.mkdtemp()
        try:
            consumer = subprocess.Popen([sys.executable, os.path.join(ROOT, "tools", "python", "microscope_advice.py"),
                                         "--endpoint", ">" + svc.publish_endpoint, "--json", "--seconds", "60",
                                         "--idle-exit-s", "3"],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                        env=dict(os.environ))
            truth_path = os.path.join(tmp, "truth.json")
            sim = subprocess.run([os.path.join(BIN, "specwatch-sim"), "--modality", "eds", "--channels",
                                  str(CHANNELS), "--scan", "%dx%d" % (W, H), "--passes", str(PASSES), "--roi",
                                  ",".join(map(str, ROI)), "--roi-passes", str(ROI_PASSES), "--rate", "20000",
                                  "--counts", "3000", "--phases", "3", "--inclusion", "0.003", "--seed", "4",
                                  "--beam-current-pA", str(CURRENT_PA), "--dwell-us", str(DWELL_US),
                                  "--endpoint", "@" + svc.frames_endpoint, "--start-delay-s", "1.0", "--hwm", "100000",
                                  "--truth", truth_path], capture_output=True, text=True, timeout=120)
            self.assertEqual(sim.returncode, 0, sim.stderr)
            out, err = consumer.communicate(timeout=90)
            self.assertEqual(consumer.returncode, 0, err)
            plans = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
            self.assertTrue(plans, "the consumer received advice: " + err)
            final = plans[-1]

            with open(truth_path) as f:
                truth = json.load(f)
            mask = np.array(truth["inclusion"]["mask"], dtype=bool).reshape(H, W)
            dose = np.array(truth["dose"]["accumulated_dose_e_per_A2"]).reshape(H, W)
            tiles_y, tiles_x = H // TILE, W // TILE
            over = {(tx, ty) for ty in range(tiles_y) for tx in range(tiles_x)
                    if dose[ty * TILE:(ty + 1) * TILE, tx * TILE:(tx + 1) * TILE].max() >= BUDGET_VISITS * D * (1 - 1e-9)}
            inclusion = {(tx, ty) for ty in range(tiles_y) for tx in range(tiles_x)
                         if mask[ty * TILE:(ty + 1) * TILE, tx * TILE:(tx + 1) * TILE].any()}
            self.assertEqual(over, {(0, 0), (1, 0), (0, 1), (1, 1)})
            self.assertTrue(inclusion - over, "the inclusion lies outside the revisited region somewhere")
            skip = {tuple(t) for t in final["skip"]}
            revisit = {tuple(t) for t in final["revisit"]}
            self.assertEqual(skip, over, final)
            self.assertTrue((inclusion - over) <= revisit, (sorted(inclusion - over), sorted(revisit)))
            # A revisit elsewhere would be a nominal false alarm (1e-5 per spectrum; a calibration of 4096 spectra
            # extrapolates far to it): at most one tile.
            self.assertLessEqual(len(revisit - inclusion), 1, (sorted(revisit), sorted(inclusion)))
            # The plan puts the revisits first, at twice the latest dose per spectrum; skipped tiles are not in it.
            plan = final["plan"]
            first = {(e["tile_x"], e["tile_y"]) for e in plan[:len(revisit)]}
            self.assertEqual(first, revisit)
            for e in plan[:len(revisit)]:
                self.assertAlmostEqual(e["dose_e_per_A2"], 2 * D, delta=1e-9 * D)
            self.assertEqual(len(plan), tiles_x * tiles_y - len(skip))

            # The control socket answers the same advice; the consumer's query mode reads it.
            with specwatch_client.ControlClient(">tcp://127.0.0.1:%d" % svc.control_port) as control:
                advice = control.advice()
            codes = specwatch_client.advice_codes(advice)
            self.assertEqual({(tx, ty) for ty in range(tiles_y) for tx in range(tiles_x) if codes[ty, tx] == 2}, skip)
            self.assertEqual({(tx, ty) for ty in range(tiles_y) for tx in range(tiles_x) if codes[ty, tx] == 1}, revisit)
            reasons = {(t.tile_x, t.tile_y): t.reason for t in advice.tiles}
            self.assertTrue(all(reasons[t] == "budget" for t in skip))
            self.assertTrue(all(reasons[t] == "novelty" for t in revisit))
            q = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "python", "microscope_advice.py"),
                                "--query", "--control", ">tcp://127.0.0.1:%d" % svc.control_port, "--json"],
                               capture_output=True, text=True, timeout=30)
            self.assertEqual(q.returncode, 0, q.stderr)
            self.assertEqual({tuple(t) for t in json.loads(q.stdout)["skip"]}, skip)
            self.assertGreater(svc.metrics()["specwatch_published_messages_total"]['{topic="advice"}'], 0)
        finally:
            svc.close()


if __name__ == "__main__":
    unittest.main()
