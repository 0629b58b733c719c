"""Issue 3 on the service side, with real processes: residual maps of scan passes (specwatch-sim with a rare
inclusion -> specwatch -> Python client and specwatch-tap) and rank-change events under auto_rank."""

import json
import os
import subprocess
import tempfile
import time
import unittest

import numpy as np

from harness import BIN, Service

import specwatch_client


def run_sim(svc, truth_path, *args):
    sim = subprocess.run([os.path.join(BIN, "specwatch-sim"), "--modality", "eds", "--endpoint",
                          "@" + svc.frames_endpoint, "--start-delay-s", "0.5", "--hwm", "100000",
                          "--truth", truth_path] + list(args), capture_output=True, text=True, timeout=60)
    assert sim.returncode == 0, sim.stderr
    with open(truth_path) as f:
        return json.load(f)


def start_tap(svc, topic):
    """specwatch-tap printing `topic` (and status), returned once its subscription is live (a status line came)."""
    tap = subprocess.Popen([os.path.join(BIN, "specwatch-tap"), "--endpoint", svc.publish_endpoint,
                            "--topics", topic + ",status", "--seconds", "30"], stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True)
    assert tap.stdout.readline().startswith("status "), "specwatch-tap prints the service's status"
    return tap


class ResidualMapTest(unittest.TestCase):
    def test_each_pass_gives_a_map_in_scan_order_where_the_inclusion_stands_out(self):
        # 3 phases at rank 2 (their mixtures span 2 centred components) plus a Pt inclusion in 2 % of the pixels
        # that the model leaves out: the denoised spectra hide it, the residual map must not.
        width, height, passes = 32, 32, 3
        svc = Service("--rank", "2", frames_socket="sub",
                      config_text='pca { block: 32 warmup_spectra: 256 calibration_spectra: 128 }\n'
                                  'model_updates: "all"\n'
                                  # the live scores in scan order; the pass-end rescoring is test_novelty_events'
                                  'novelty { retrospective: false }\n')
        tmp = tempfile.mkdtemp()
        try:
            sub = specwatch_client.EventSubscriber(">" + svc.publish_endpoint, topics=("denoised", "residual_map"))
            tap = start_tap(svc, "residual_map")
            truth = run_sim(svc, os.path.join(tmp, "truth.json"), "--channels", "256", "--scan",
                            "%dx%d" % (width, height), "--passes", str(passes), "--rate", "20000", "--counts", "3000",
                            "--phases", "3", "--inclusion", "0.02", "--seed", "4")
            mask = np.array(truth["inclusion"]["mask"], dtype=bool).reshape(height, width)
            self.assertGreaterEqual(mask.sum(), 15)

            # The client's view: every denoised message, then one map per pass (the last completes with the
            # series: the simulator sends every position, so each pass closes as "complete").
            z = {}        # (pass, y, x) -> deviance_z published with the denoised spectrum
            maps = []
            for ev in sub.events(timeout_s=3.0):
                if ev.topic == "denoised":
                    d = ev.body
                    for i, p in enumerate(d.positions):
                        if len(d.deviance_z):
                            z[(p.scan_pass, p.y, p.x)] = d.deviance_z[i]
                elif ev.topic == "residual_map":
                    maps.append(ev)
                    if len(maps) == passes:
                        break
            self.assertEqual([m.body.scan_pass for m in maps], list(range(passes)))
            for m in maps:
                b, v = m.body, m.payload
                self.assertEqual((b.width, b.height), (width, height))
                self.assertEqual(v.shape, (height, width))
                self.assertEqual(v.dtype, np.float32)
                self.assertEqual(b.statistic, "deviance_z")
                self.assertEqual(b.closed_by, "complete")
                self.assertEqual(b.spectra, width * height)
                self.assertEqual(m.series_id, truth["series_id"])
                # In scan order: the value at (y, x) is the one published for that position and pass.
                scored = [(y, x) for y in range(height) for x in range(width) if (b.scan_pass, y, x) in z]
                self.assertEqual(b.positions_scored, len(scored))
                self.assertEqual(int(np.isfinite(v).sum()), len(scored))
                for (y, x) in scored:
                    self.assertEqual(v[y, x], np.float32(z[(b.scan_pass, y, x)]))
                finite = v[np.isfinite(v)]
                self.assertAlmostEqual(b.median, float(np.median(finite)), places=4)
                mad = np.median(np.abs(finite - np.median(finite)))
                self.assertAlmostEqual(b.robust_sigma, 1.4826 * mad, places=4)
                self.assertEqual(b.outliers, int((finite >= b.outlier_threshold).sum()))
            # Pass 0 started during warm-up: at least the first 256 spectra (more when denoising ran ahead of
            # the model update) were denoised without a model and have no value.
            self.assertGreater(maps[0].body.positions_scored, 0)
            self.assertLessEqual(maps[0].body.positions_scored, width * height - 256)
            for m in maps[1:]:
                b, v = m.body, m.payload
                self.assertEqual(b.positions_scored, width * height)
                flagged = v >= b.outlier_threshold
                host = v[~mask]
                print("\npass %d: inclusion z median %.1f (min %.1f), host median %.2f p99 %.2f; threshold %.2f: "
                      "%d/%d inclusion and %d/%d host positions flagged" %
                      (b.scan_pass, np.median(v[mask]), v[mask].min(), np.median(host), np.percentile(host, 99),
                       b.outlier_threshold, (flagged & mask).sum(), mask.sum(), (flagged & ~mask).sum(), host.size))
                self.assertTrue(flagged[mask].all(), "every inclusion position is at or above median + 5 sigma")
                self.assertGreater(np.median(v[mask]), 3 * np.percentile(host, 99))
                self.assertLess((flagged & ~mask).sum(), 0.05 * host.size)

            m = svc.metrics()
            self.assertEqual(m["specwatch_published_messages_total"]['{topic="residual_map"}'], passes)
            self.assertEqual(m["specwatch_residual_map_outlier_positions"][""], maps[-1].body.outliers)
            tap.terminate()
            out, _ = tap.communicate(timeout=10)
            self.assertEqual(tap.returncode, 0)
            lines = [l for l in out.splitlines() if l.startswith("residual_map ")]
            self.assertEqual(len(lines), passes)
            self.assertIn("pass=1 scan=32x32 deviance_z closed_by=complete scored=1024/1024", lines[1])
            self.assertIn("outliers_5sigma=%d" % maps[1].body.outliers, lines[1])
            sub.close()
            self.assertEqual(svc.stop()[0], 0)
        finally:
            svc.close()


def model_events(subscriber, series_ends):
    """(rank changes, {series: series-end snapshot}) received until `series_ends` series ended."""
    changes, ends = [], {}
    for ev in subscriber.events(timeout_s=3.0):
        if ev.topic == "model":
            changes.append(ev)
        elif ev.body.reason == "series_end":
            ends[ev.series_id] = ev.body
            if len(ends) == series_ends:
                break
    return changes, ends


class RankChangeTest(unittest.TestCase):
    def assert_chain(self, changes):
        """Each change starts where the previous one ended, at a later version."""
        self.assertTrue(changes)
        for before, after in zip(changes, changes[1:]):
            self.assertEqual(after.body.old_rank, before.body.new_rank)
            self.assertGreater(after.body.model_version, before.body.model_version)

    def test_simulated_eds_a_second_series_with_more_phases_raises_the_rank(self):
        # Two phases mix on a 1-dimensional line after centring; four span 3 dimensions. The model carries over
        # from the first series to the second, so auto_rank has to raise the rank, and each change is an event.
        svc = Service(frames_socket="sub", config_text='pca { rank: 6 auto_rank: true rank_min: 1 block: 32 '
                                                       'warmup_spectra: 256 calibration_spectra: 128 }\n'
                                                       'model_updates: "all"\n')
        tmp = tempfile.mkdtemp()
        try:
            sub = specwatch_client.EventSubscriber(">" + svc.publish_endpoint, topics=("model", "snapshot"))
            for phases, seed in ((2, 5), (4, 6)):
                run_sim(svc, os.path.join(tmp, "truth%d.json" % phases), "--channels", "256", "--scan", "32x32",
                        "--passes", "2", "--rate", "0", "--counts", "3000", "--phases", str(phases), "--seed",
                        str(seed), "--series-id", "phases-%d" % phases)
            changes, ends = model_events(sub, 2)
            self.assertEqual(ends["phases-2"].rank, 1)
            in_four = [c.body for c in changes if c.series_id == "phases-4"]
            self.assertTrue(in_four, "the rank changes while the four-phase series is learnt")
            self.assertEqual(in_four[0].old_rank, 1)
            # 3 components are signal; on these counts a 4th sits at the threshold (it may be kept).
            self.assertIn(ends["phases-4"].rank, (3, 4))
            self.assertEqual(in_four[-1].new_rank, ends["phases-4"].rank)
            self.assert_chain(changes)
            for c in in_four:
                self.assertTrue(c.auto_rank)
                self.assertAlmostEqual(c.rank_hysteresis, 0.1)
                self.assertGreater(c.singular_values[c.new_rank - c.first_index - 1],
                                   c.rank_threshold * (1 - c.rank_hysteresis))
            self.assertEqual(svc.metrics()["specwatch_model_rank_changes_total"][""], len(changes))
            sub.close()
            self.assertEqual(svc.stop()[0], 0)
        finally:
            svc.close()

    def test_auto_rank_follows_a_second_series_with_more_components_and_says_so(self):
        # Spectra on 1, then 3, fixed directions plus i.i.d. Gaussian noise (float32: no Poisson weighting):
        # the setting the Gavish-Donoho threshold is exact for, so the rank must follow exactly.
        channels, noise = 64, 1.0
        svc = Service(config_text='pca { rank: 6 auto_rank: true rank_min: 1 block: 32 warmup_spectra: 64 }\n'
                                  'model_updates: "all"\n')
        rng = np.random.default_rng(21)
        basis = np.linalg.qr(rng.normal(size=(channels, 3)))[0].T  # 3 x channels, orthonormal rows
        amplitude = np.array([40.0, 30.0, 20.0])
        mean = np.linspace(300.0, 500.0, channels)
        try:
            sub = specwatch_client.EventSubscriber(">" + svc.publish_endpoint, topics=("model", "snapshot"))
            time.sleep(0.3)  # the subscription reaches the service's PUB
            tap = start_tap(svc, "model")
            with specwatch_client.FramePublisher(">" + svc.frames_endpoint, "push") as det:
                for series, active in (("one", 1), ("three", 3)):
                    det.start_series(series, channel_count=channels, payload_type="float32", scan_shape=(32, 32))
                    for _ in range(32):
                        z = rng.normal(size=(32, active)) * amplitude[:active]
                        x = mean + z @ basis[:active] + noise * rng.normal(size=(32, channels))
                        det.send_frame(x.astype(np.float32))
                    det.end_series()
            changes, ends = model_events(sub, 2)
            self.assertEqual(ends["one"].rank, 1)
            self.assertEqual(ends["three"].rank, 3)
            # The events tell the same story: a chain of changes ending at 3, the last ones in series "three"
            # starting from the rank 1 that series "one" ended with.
            self.assert_chain(changes)
            in_three = [c.body for c in changes if c.series_id == "three"]
            self.assertTrue(in_three)
            self.assertEqual(in_three[0].old_rank, 1)
            self.assertEqual(in_three[-1].new_rank, 3)
            for c in (e.body for e in changes):
                self.assertTrue(c.auto_rank)
                self.assertGreater(c.rank_threshold, 0)
                if c.spectra_seen >= 4 * channels:  # sigma: the noise per entry (here 1), once enough was seen
                    self.assertAlmostEqual(c.noise_sigma, noise, delta=0.15)
                kept = c.new_rank - c.first_index  # index in singular_values of the first value not kept
                self.assertGreater(c.singular_values[kept - 1], c.rank_threshold * (1 - c.rank_hysteresis))
                if kept < len(c.singular_values):
                    self.assertLessEqual(c.singular_values[kept], c.rank_threshold * (1 + c.rank_hysteresis))
            m = svc.metrics()
            self.assertEqual(m["specwatch_model_rank_changes_total"][""], len(changes))
            self.assertEqual(m["specwatch_model_rank"][""], 3)
            self.assertEqual(svc.status().rank, 3)
            tap.terminate()
            out, _ = tap.communicate(timeout=10)
            self.assertIn("rank 1->", out)
            self.assertEqual(len([l for l in out.splitlines() if l.startswith("model ")]), len(changes))
            sub.close()
            self.assertEqual(svc.stop()[0], 0)
        finally:
            svc.close()


if __name__ == "__main__":
    unittest.main()
