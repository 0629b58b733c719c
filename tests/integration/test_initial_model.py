"""Saving the model (control save_model) and starting a service from the file (--initial-model), with real
processes: specwatch-sim -> specwatch -> Python client, twice."""

import json
import os
import subprocess
import tempfile
import time
import unittest

import numpy as np

from harness import BIN, Service, run

import specwatch_client

SPECWATCH = os.path.join(BIN, "specwatch")
WIDTH, HEIGHT, CHANNELS, RANK = 32, 32, 256, 2
CONFIG = 'pca { block: 32 warmup_spectra: 256 calibration_spectra: 128 }\nmodel_updates: "all"\n'


def run_sim(svc, seed, truth_path=None):
    args = [os.path.join(BIN, "specwatch-sim"), "--modality", "eds", "--channels", str(CHANNELS), "--scan",
            "%dx%d" % (WIDTH, HEIGHT), "--passes", "1", "--rate", "20000", "--counts", "3000", "--phases", "3",
            "--seed", str(seed), "--endpoint", "@" + svc.frames_endpoint, "--start-delay-s", "0.5", "--hwm", "100000"]
    if truth_path:
        args += ["--truth", truth_path]
    sim = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert sim.returncode == 0, sim.stderr


class InitialModelTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp()
        self.services = []

    def tearDown(self):
        for svc in self.services:
            svc.close()

    def start(self, *args):
        svc = Service("--rank", str(RANK), *args, frames_socket="sub", config_text=CONFIG)
        self.services.append(svc)
        return svc

    def test_a_saved_model_is_the_starting_point_of_the_next_service(self):
        model_path = os.path.join(self.tmp, "model.snap")
        recording = os.path.join(self.tmp, "snapshots.tap")

        # First service: learn one scan, keep its series-end snapshot, save the model to a file.
        first = self.start()
        sub = specwatch_client.EventSubscriber(">" + first.publish_endpoint, topics=("snapshot",))
        tap = subprocess.Popen([os.path.join(BIN, "specwatch-tap"), "--endpoint", first.publish_endpoint,
                                "--topics", "snapshot", "--record", recording, "--quiet", "--seconds", "30"],
                               stderr=subprocess.DEVNULL)
        time.sleep(0.3)  # both subscriptions reach the service before the simulator's series starts (0.5 s)
        run_sim(first, seed=3)
        end = next(e for e in sub.events(timeout_s=5.0) if e.body.reason == "series_end")
        control = specwatch_client.ControlClient(">tcp://127.0.0.1:%d" % first.control_port)
        reply = control.save_model(model_path)
        self.assertIn("saved to " + model_path, reply.message)
        refused = control.request("save_model", path=os.path.join(self.tmp, "no-such-dir", "m.snap"))
        self.assertFalse(refused.ok)
        self.assertIn("no-such-dir", refused.message)
        control.close()
        # Spectra the novelty guard held out of the young model (outlier_guard.hpp) are not in it.
        excluded = first.metrics()["specwatch_model_spectra_excluded_total"][""]
        self.assertLess(excluded, 0.05 * WIDTH * HEIGHT)
        sub.close()
        tap.terminate()
        self.assertEqual(tap.wait(timeout=10), 0)
        self.assertEqual(first.stop()[0], 0)

        # The file holds the model of the series end, whole: the snapshot as published plus channel_scale.
        saved = specwatch_client.load_snapshot_file(model_path)
        s = saved.body
        self.assertEqual(s.reason, "save")
        self.assertEqual((s.model_version, s.rank, s.channel_count), (end.body.model_version, RANK, CHANNELS))
        self.assertTrue(s.poisson_weighted)
        self.assertEqual(len(s.channel_scale), CHANNELS)
        self.assertEqual(s.spectra_seen + excluded, WIDTH * HEIGHT)
        np.testing.assert_array_equal(saved.payload, end.payload)

        # Start-up checks: a missing file and a rank the options cannot hold are refused (exit 2, named);
        # a specwatch-tap recording of snapshots is a valid initial model too.
        r = run([SPECWATCH, "--check-config", "--initial-model", os.path.join(self.tmp, "missing.snap")])
        self.assertEqual(r.returncode, 2)
        self.assertIn("initial_model: cannot read", r.stderr)
        r = run([SPECWATCH, "--check-config", "--rank", "1", "--initial-model", model_path])
        self.assertEqual(r.returncode, 2)
        self.assertIn("above pca.rank", r.stderr)
        r = run([SPECWATCH, "--check-config", "--rank", str(RANK), "--initial-model", recording])
        self.assertEqual(r.returncode, 0, r.stderr)

        # Second service, from the file: before any frame its model is the saved one.
        second = self.start("--initial-model", model_path)
        sub = specwatch_client.EventSubscriber(">" + second.publish_endpoint, topics=("snapshot", "denoised"))
        st = second.status()
        self.assertEqual((st.model_version, st.rank, st.spectra_in_model), (s.model_version, RANK, 0))
        time.sleep(0.3)
        with specwatch_client.ControlClient(">tcp://127.0.0.1:%d" % second.control_port) as control:
            control.snapshot()
        now = next(e for e in sub.events(timeout_s=5.0) if e.topic == "snapshot")
        b = now.body
        self.assertEqual(b.reason, "request")
        self.assertEqual((b.model_version, b.rank, b.channel_count), (s.model_version, s.rank, s.channel_count))
        self.assertEqual(b.spectra_seen, s.spectra_seen)
        self.assertAlmostEqual(b.total_variance, s.total_variance, delta=1e-9 * s.total_variance)
        self.assertEqual(list(b.channel_scale), list(s.channel_scale))
        self.assertEqual(list(b.singular_values), list(s.singular_values))
        np.testing.assert_allclose(now.mean, saved.mean, rtol=1e-5, atol=1e-6 * np.abs(saved.mean).max())
        np.testing.assert_allclose(now.components, saved.components, rtol=0,
                                   atol=1e-4 * np.abs(saved.components).max())

        # It denoises from the first frame of a new scan of the same sample (another layout, new noise), with
        # the saved model, and learns on from it.
        truth_path = os.path.join(self.tmp, "truth.json")
        run_sim(second, seed=4, truth_path=truth_path)
        with open(truth_path) as f:
            truth = json.load(f)
        phases = np.array([p["spectrum"] for p in truth["phases"]])
        expected = np.array(truth["abundances"]["values"]).T @ phases  # pixels x channels, noiseless counts
        frames, last_end = {}, None
        for ev in sub.events(timeout_s=3.0):
            if ev.topic == "denoised":
                frames[ev.body.frame_number] = ev
            elif ev.body.reason == "series_end":
                last_end = ev.body
                break
        self.assertEqual(len(frames), WIDTH * HEIGHT // WIDTH)
        first_frame = frames[0].body
        self.assertEqual((first_frame.rank, first_frame.model_version), (RANK, s.model_version))
        pixels = [p.y * WIDTH + p.x for p in first_frame.positions]
        exp = expected[pixels]
        # Poisson noise: the raw spectra's mean squared error is the mean expected count.
        gain = exp.mean() / np.mean((frames[0].payload - exp) ** 2)
        print("\nfirst frame after the restart, denoised with the saved model: MSE raw / MSE denoised = %.1f" % gain)
        self.assertGreater(gain, 5.0)
        self.assertGreater(frames[max(frames)].body.model_version, s.model_version)
        excluded = second.metrics()["specwatch_model_spectra_excluded_total"][""]
        self.assertLess(excluded, 0.05 * WIDTH * HEIGHT)
        self.assertEqual(last_end.spectra_seen + excluded, s.spectra_seen + WIDTH * HEIGHT)
        sub.close()
        self.assertEqual(second.stop()[0], 0)
        self.assertIn("model restored: version %d, rank %d" % (s.model_version, RANK), second.log())


if __name__ == "__main__":
    unittest.main()
