"""The Python tools an instrument script uses, against the real service: publish_frames.py streams the
measured FePt core-shell STEM-EDS spectrum image (../shared/data), control.py queries and steers the service,
subscribe_events.py prints what comes out."""

import json
import os
import subprocess
import sys
import time
import unittest

import numpy as np

from harness import ROOT, Service

TOOLS = os.path.join(ROOT, "tools", "python")
DATA = os.path.join(os.path.dirname(ROOT), "shared", "data", "eds_si_FePt_core_shell_64x64x992.npy")
PY = "/usr/bin/python3"


class PythonToolsTest(unittest.TestCase):
    @unittest.skipUnless(os.path.exists(DATA), "shared/data is not beside the project")
    def test_real_eds_image_through_the_service(self):
        svc = Service("--rank", "4", frames_socket="sub",
                      config_text='model_updates: "all"\npca { block: 64 warmup_spectra: 512 auto_rank: false }\n')
        try:
            env = dict(os.environ)
            sub = subprocess.Popen([PY, os.path.join(TOOLS, "subscribe_events.py"), "--endpoint",
                                    ">" + svc.publish_endpoint, "--json", "--seconds", "30", "--count", "65",
                                    "--topic", "denoised", "--topic", "snapshot"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            time.sleep(1.0)  # the subscriber's SUB joins before the first frame is published
            r = subprocess.run([PY, os.path.join(TOOLS, "publish_frames.py"), "--npy", DATA, "--endpoint",
                                "@" + svc.frames_endpoint, "--series-id", "fept", "--quiet",
                                "--wait-subscriber-s", "10"], capture_output=True, text=True, timeout=60, env=env)
            self.assertEqual(r.returncode, 0, r.stderr)
            st = svc.wait_for(lambda s: s.spectra_published >= 4096, what="the 64x64 image published")
            self.assertEqual(st.spectra_published, 4096)
            self.assertEqual(st.spectra_rejected, 0)
            self.assertEqual(st.sequence_gaps, 0)
            self.assertEqual(st.series_id, "fept")

            c = subprocess.run([PY, os.path.join(TOOLS, "control.py"), "--endpoint",
                                "tcp://127.0.0.1:%d" % svc.control_port, "--json", "status"],
                               capture_output=True, text=True, timeout=30)
            self.assertEqual(c.returncode, 0, c.stderr)
            self.assertIn("4096", c.stdout)
            c = subprocess.run([PY, os.path.join(TOOLS, "control.py"), "--endpoint",
                                "tcp://127.0.0.1:%d" % svc.control_port, "snapshot"],
                               capture_output=True, text=True, timeout=30)
            self.assertEqual(c.returncode, 0, c.stderr)

            out, err = sub.communicate(timeout=40)
            events = [json.loads(l) for l in out.splitlines() if l.startswith("{")]
            topics = [e.get("topic") for e in events]
            self.assertEqual(sub.returncode, 0, err)
            self.assertEqual(topics.count("denoised"), 64, err)  # one per scan line
            self.assertEqual(topics[-1], "snapshot", err)          # the series-end snapshot
            snap = events[-1]["envelope"]["snapshot"]
            self.assertEqual(snap["reason"], "series_end")
            self.assertEqual(snap["rank"], 4)
        finally:
            svc.stop()
            svc.close()

    def test_scores_payload_rebuilt_by_the_client(self):
        """denoised_payload: scores. The service sends scores, not spectra; EventSubscriber rebuilds each
        spectrum from the snapshot of the message's model version. Independent check: the residual of the
        client's rebuild against the spectra it sent equals the residual the service computed from its own
        reconstruction."""
        import specwatch_client as sc
        rng = np.random.default_rng(11)
        channels, per_frame, frames = 256, 32, 40
        e = np.arange(channels)
        phases = np.stack([50 * np.exp(-0.5 * ((e - c) / 6.0) ** 2) + 5 for c in (60, 130, 200)])
        svc = Service("--rank", "3", "--denoised-payload", "scores",
                      config_text='model_updates: "all"\npca { block: 32 warmup_spectra: 64 calibration_spectra: 64 auto_rank: false }\n')
        sent = {}
        try:
            with sc.EventSubscriber(">" + svc.publish_endpoint, topics=("denoised", "snapshot")) as sub, \
                    sc.FramePublisher(">" + svc.frames_endpoint, "push") as pub:
                time.sleep(0.5)  # the subscription reaches the service
                pub.start_series("scores", channel_count=channels, payload_type="uint16", scan_shape=(32, 40))
                for n in range(frames):
                    weights = rng.dirichlet(np.ones(3), size=per_frame)
                    truth = weights @ phases
                    counts = rng.poisson(truth).astype(np.uint16)
                    sent[n] = (counts.astype(np.float64), truth)
                    pub.send_frame(counts, start_index=n * per_frame)
                pub.end_series()
                denoised, rebuilt = [], 0
                for ev in sub.events(timeout_s=10):
                    if ev.kind == "denoised":
                        denoised.append(ev)
                        rebuilt += ev.rebuilt
                    if ev.kind == "snapshot" and ev.body.reason == "series_end":
                        break
            self.assertEqual(len(denoised), frames)
            self.assertEqual(sub.models_missing, 0)
            # Warm-up is 2 frames, but denoising runs ahead of the model by up to max_frames_in_flight (16).
            self.assertGreaterEqual(rebuilt, frames - 18)
            err_raw = err_rebuilt = 0.0
            for ev in denoised:
                d = ev.body
                if not ev.rebuilt:  # warm-up: the spectra themselves were sent
                    self.assertFalse(d.spectra_omitted)
                    continue
                self.assertIsNone(ev.raw_payload)
                self.assertEqual(d.rank, 3)
                self.assertEqual(ev.payload.shape, (per_frame, channels))
                raw, truth = sent[d.frame_number]
                residual = np.linalg.norm(raw - ev.payload, axis=1)
                np.testing.assert_allclose(residual, np.array(d.residual_norm), rtol=2e-3)
                err_raw += np.sum((raw - truth) ** 2)
                err_rebuilt += np.sum((ev.payload - truth) ** 2)
            # The rebuilt spectra are denoised: rank 3 of 256 channels keeps a small part of the Poisson noise.
            self.assertLess(err_rebuilt, err_raw / 5)
        finally:
            svc.stop()
            svc.close()


if __name__ == "__main__":
    unittest.main()
