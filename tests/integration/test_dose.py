"""Issue 5, the dose ledger end to end with real processes: specwatch-sim (beam current, dwell and pixel size set)
-> specwatch -> the Python client. Dose maps per pass against the simulator's ground truth, budget alarms exactly
at their thresholds and once per position and level, a budget set through the control socket, metrics and
status."""

import json
import os
import subprocess
import tempfile
import unittest

import numpy as np

from harness import BIN, Service

import specwatch_client

W, H, PASSES, CHANNELS = 16, 8, 5, 256
CURRENT_PA, DWELL_US, PIXEL_A = 35.0, 20.0, 2.0
# The simulator's closed form (tools/sim/dose.hpp): D = 6.2415 I[pA] tau[us] / L^2 e-/A^2.
D = 1e-18 / 1.602176634e-19 * CURRENT_PA * DWELL_US / PIXEL_A ** 2


def run_sim(svc, truth_path, passes, series_id, seed):
    sim = subprocess.run([os.path.join(BIN, "specwatch-sim"), "--modality", "eds", "--channels", str(CHANNELS),
                          "--scan", "%dx%d" % (W, H), "--passes", str(passes), "--rate", "20000", "--counts", "500",
                          "--beam-current-pA", str(CURRENT_PA), "--dwell-us", str(DWELL_US), "--pixel-A",
                          str(PIXEL_A), "--seed", str(seed), "--series-id", series_id, "--truth", truth_path,
                          "--endpoint", "@" + svc.frames_endpoint, "--start-delay-s", "0.5", "--hwm", "100000"],
                         capture_output=True, text=True, timeout=60)
    assert sim.returncode == 0, sim.stderr
    with open(truth_path) as f:
        return json.load(f)


class DoseTest(unittest.TestCase):
    def test_dose_maps_match_the_truth_and_alarms_fire_exactly_once_at_their_thresholds(self):
        # Position budget 3.5 D: warning at 0.8 x 3.5 D = 2.8 D, reached at the 3rd visit (pass 2); limit at the
        # 4th (pass 3). Run budget 2.5 passes: warning at 2.0 passes (the last frame of pass 1), limit at 2.5
        # passes (the frame that completes line H/2 - 1 of pass 2).
        run_budget = 2.5 * W * H * D
        svc = Service("--dose-budget", repr(3.5 * D), frames_socket="sub",
                      config_text="dose { run_budget_e_per_A2: %r }\n" % run_budget)
        tmp = tempfile.mkdtemp()
        try:
            sub = specwatch_client.EventSubscriber(">" + svc.publish_endpoint, topics=("dose",))
            truth = run_sim(svc, os.path.join(tmp, "truth.json"), PASSES, "dose-1", 3)
            self.assertAlmostEqual(truth["dose"]["dose_per_spectrum_e_per_A2"], D, delta=1e-12 * D)
            events = list(sub.events(timeout_s=2.0))
            maps = [e for e in events if e.kind == "dose_map"]
            alarms = [e.body for e in events if e.kind == "dose_alarm"]

            # One map per pass, each position at (pass + 1) D; the last equals the truth to 1e-6 relative.
            self.assertEqual([m.body.scan_pass for m in maps], list(range(PASSES)))
            for m in maps:
                p = m.body.scan_pass
                self.assertEqual(m.payload.shape, (H, W))
                np.testing.assert_allclose(m.payload, (p + 1) * D, rtol=1e-12)
                self.assertAlmostEqual(m.body.run_dose_e_per_A2, (p + 1) * W * H * D, delta=1e-9 * W * H * D)
                self.assertEqual(m.body.spectra, (p + 1) * W * H)
                self.assertAlmostEqual(m.body.dose_rate_e_per_A2_per_s, D / (DWELL_US * 1e-6), delta=1e-6 * D / DWELL_US)
            truth_map = np.array(truth["dose"]["accumulated_dose_e_per_A2"]).reshape(H, W)
            np.testing.assert_allclose(maps[-1].payload, truth_map, rtol=1e-6)
            truth_run = truth_map.sum()
            self.assertAlmostEqual(maps[-1].body.run_dose_e_per_A2 / truth_run, 1.0, delta=1e-6)

            # Position alarms: every position exactly once per level, at the visit that reached the threshold.
            for level, visit in (("warning", 3), ("limit", 4)):
                seen = []
                for a in alarms:
                    if a.scope != "position" or a.level != level:
                        continue
                    self.assertAlmostEqual(a.threshold_e_per_A2, (2.8 if level == "warning" else 3.5) * D,
                                           delta=1e-9 * D)
                    for pos, dose in zip(a.positions, a.position_dose_e_per_A2):
                        self.assertEqual(pos.scan_pass, visit - 1)
                        self.assertAlmostEqual(dose, visit * D, delta=1e-9 * D)
                        seen.append((pos.x, pos.y))
                self.assertEqual(sorted(seen), sorted((x, y) for x in range(W) for y in range(H)), level)
            # Run alarms: once per level, in the frame that reached the threshold (one line of W spectra).
            run_alarms = {a.level: a for a in alarms if a.scope == "run"}
            self.assertEqual(sorted(run_alarms), ["limit", "warning"])
            self.assertEqual(len([a for a in alarms if a.scope == "run"]), 2)
            for level, threshold in (("warning", 0.8 * run_budget), ("limit", run_budget)):
                a = run_alarms[level]
                self.assertGreaterEqual(a.run_dose_e_per_A2, threshold * (1 - 1e-12))
                self.assertLess(a.run_dose_e_per_A2 - W * D, threshold)
            self.assertEqual(run_alarms["warning"].frame_number, 2 * H - 1)  # frames are lines: the last of pass 1

            m = svc.metrics()
            self.assertEqual(m["specwatch_dose_alarms_total"]['{level="warning",scope="position"}'], W * H)
            self.assertEqual(m["specwatch_dose_alarms_total"]['{level="limit",scope="position"}'], W * H)
            self.assertEqual(m["specwatch_dose_alarms_total"]['{level="limit",scope="run"}'], 1)
            self.assertAlmostEqual(m["specwatch_dose_run_e_per_A2"][""] / truth_run, 1.0, delta=1e-6)
            self.assertAlmostEqual(m["specwatch_dose_max_position_e_per_A2"][""], PASSES * D, delta=1e-6 * D)
            self.assertEqual(m["specwatch_dose_positions_over_limit"][""], W * H)
            st = svc.status()
            self.assertAlmostEqual(st.dose_run_e_per_A2 / truth_run, 1.0, delta=1e-6)
            self.assertAlmostEqual(st.dose_position_budget_e_per_A2, 3.5 * D, delta=1e-9 * D)

            # A budget set through the control socket before the next series is in force for it: 1.5 D per
            # position, so the warning (1.2 D) comes at the 2nd visit and the limit too.
            control = specwatch_client.ControlClient(">tcp://127.0.0.1:%d" % svc.control_port)
            reply = control.set_dose_budget(position_e_per_A2=1.5 * D)
            self.assertIn("dose budget", reply.message)
            with self.assertRaises(specwatch_client.ControlError):
                control.set_dose_budget(position_e_per_A2=-1.0)
            control.close()
            run_sim(svc, os.path.join(tmp, "truth2.json"), 2, "dose-2", 4)
            later = [e.body for e in sub.events(timeout_s=2.0) if e.kind == "dose_alarm" and e.series_id == "dose-2"]
            for level in ("warning", "limit"):
                positions = [(p.x, p.y, p.scan_pass) for a in later if a.scope == "position" and a.level == level
                             for p in a.positions]
                self.assertEqual(len(positions), W * H, level)
                self.assertTrue(all(pass_ == 1 for _, _, pass_ in positions))
            self.assertFalse([a for a in later if a.scope == "run"], "no run budget: none set with this request")
            self.assertAlmostEqual(svc.status().dose_position_budget_e_per_A2, 1.5 * D, delta=1e-9 * D)
            sub.close()
        finally:
            svc.close()


if __name__ == "__main__":
    unittest.main()
