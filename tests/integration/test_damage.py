"""Issue 5, beam damage end to end with real processes: specwatch-sim (EDS, damage with a critical dose of 5 visits'
dose) -> specwatch -> the Python client. One damage warning before 1.5 D_c, then updates whose critical dose
converges to the truth; the O K line is named among the energies that changed; the advice skips damaged tiles;
metrics agree."""

import json
import os
import subprocess
import tempfile
import unittest

from harness import BIN, Service

import specwatch_client

W, H, PASSES, CHANNELS = 48, 48, 10, 2048
CURRENT_PA, DWELL_US = 50.0, 10.0
D = 1e-18 / 1.602176634e-19 * CURRENT_PA * DWELL_US  # e-/A^2 per spectrum (pixel 1 A)
DC = 5 * D


class DamageTest(unittest.TestCase):
    def test_damage_is_warned_before_1_5_dc_and_dc_estimated(self):
        svc = Service(frames_socket="sub", config_text='model_updates: "when_idle"\n')
        tmp = tempfile.mkdtemp()
        try:
            sub = specwatch_client.EventSubscriber(">" + svc.publish_endpoint, topics=("damage", "advice"))
            truth_path = os.path.join(tmp, "truth.json")
            sim = subprocess.run([os.path.join(BIN, "specwatch-sim"), "--modality", "eds", "--channels", str(CHANNELS),
                                  "--scan", "%dx%d" % (W, H), "--passes", str(PASSES), "--rate", "20000", "--counts",
                                  "5000", "--phases", "3", "--seed", "61", "--critical-dose", repr(DC),
                                  "--beam-current-pA", str(CURRENT_PA), "--dwell-us", str(DWELL_US),
                                  "--endpoint", "@" + svc.frames_endpoint, "--start-delay-s", "0.5", "--hwm", "100000",
                                  "--truth", truth_path], capture_output=True, text=True, timeout=120)
            self.assertEqual(sim.returncode, 0, sim.stderr)
            with open(truth_path) as f:
                truth = json.load(f)
            self.assertAlmostEqual(truth["damage"]["critical_dose_e_per_A2"], DC, delta=1e-9 * DC)
            events = list(sub.events(timeout_s=3.0))
            damage = [e.body for e in events if e.kind == "damage_event"]
            warnings = [d for d in damage if d.kind == "warning"]
            self.assertEqual(len(warnings), 1, [(d.kind, d.visit, d.z) for d in damage])
            w = warnings[0]
            print("\nwarning at visit %d, dose %.4g e-/A^2 = %.2f D_c, z %.1f" % (w.visit, w.dose_e_per_A2,
                                                                               w.dose_e_per_A2 / DC, w.z))
            self.assertLess(w.dose_e_per_A2, 1.5 * DC)
            self.assertGreaterEqual(w.z, 6.0)
            self.assertEqual(w.tracked_stride, 2)  # 48 x 48 > 2048 positions: every other one in x and y
            updates = [d for d in damage if d.kind == "update"]
            self.assertGreater(len(updates), 3)
            last = updates[-1]
            print("last update: D_c %.4g [%.4g, %.4g] e-/A^2 (truth %.4g), %d groups, %d affected positions"
                  % (last.critical_dose_e_per_A2, last.critical_dose_lower_e_per_A2, last.critical_dose_upper_e_per_A2,
                     DC, last.groups, last.affected_positions))
            self.assertTrue(last.critical_dose_ok)
            self.assertAlmostEqual(last.critical_dose_e_per_A2 / DC, 1.0, delta=0.3)
            # The O K line (0.525 keV) lost intensity.
            self.assertTrue(any(e.mean_change_sd < 0 and e.energy_low <= 0.525 <= e.energy_high + 0.01
                                for e in last.energies), [(e.energy_low, e.energy_high, e.z) for e in last.energies])
            self.assertGreater(last.affected_positions, 0)
            # Damaged positions make their tiles skip.
            advice = [e.body for e in events if e.kind == "advice"]
            self.assertTrue(advice)
            self.assertGreater(advice[-1].skip_tiles, 0)
            self.assertTrue(any(t.reason == "damage" for t in advice[-1].tiles))

            m = svc.metrics()
            self.assertEqual(m["specwatch_damage_warnings_total"][""], 1)
            self.assertAlmostEqual(m["specwatch_damage_critical_dose_e_per_A2"][""], last.critical_dose_e_per_A2,
                                   delta=1e-6 * DC)
            self.assertEqual(m["specwatch_damage_affected_positions"][""], last.affected_positions)
            sub.close()
        finally:
            svc.close()


if __name__ == "__main__":
    unittest.main()
