"""The whole path with real processes: specwatch-sim publishes a physics-based spectrum image, specwatch
denoises it, and specwatch-tap and the Python client receive what it publishes. The denoised spectra are
compared with the simulator's noiseless ground truth."""

import json
import os
import subprocess
import tempfile
import threading
import time
import unittest

import numpy as np
import zmq

from harness import BIN, Service, frame_pb2

import specwatch_client


class RawCapture(threading.Thread):
    """A second subscriber on the simulator's PUB socket: the raw frames the service saw."""

    def __init__(self, endpoint):
        super().__init__(daemon=True)
        self.sock = zmq.Context.instance().socket(zmq.SUB)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.sock.setsockopt(zmq.RCVHWM, 100000)
        self.sock.connect(endpoint)
        self.messages = []
        self.stop = False

    def run(self):
        while not self.stop:
            if self.sock.poll(50):
                self.messages.append(self.sock.recv_multipart())

    def frames(self):
        """frame number -> (start index, spectra x channels as float64)"""
        out = {}
        for parts in self.messages:
            m = frame_pb2.DetectorMessage()
            m.ParseFromString(parts[0])
            if m.WhichOneof("body") == "frame":
                h = m.frame
                x = np.frombuffer(parts[1], dtype="<u2").reshape(h.spectrum_count, h.channel_count)
                out[h.frame_number] = (h.start_index, x.astype(np.float64))
        return out


class EndToEndTest(unittest.TestCase):
    def test_simulator_service_tap_and_python_client(self):
        # 3 phases whose abundances sum to 1: the centred noiseless data have rank 2.
        width, height, passes, channels, rank = 32, 32, 3, 512, 2
        svc = Service("--rank", str(rank), frames_socket="sub",
                      config_text='pca { block: 32 warmup_spectra: 1024 }\nmodel_updates: "all"\n'
                                  'snapshot_period_s: 0.5\n')
        tmp = tempfile.mkdtemp()
        truth_path = os.path.join(tmp, "truth.json")
        record_path = os.path.join(tmp, "tap.rec")
        try:
            subscriber = specwatch_client.EventSubscriber(">" + svc.publish_endpoint, topics=("denoised", "snapshot"))
            tap_out = open(os.path.join(tmp, "tap.out"), "w+")
            tap_err = open(os.path.join(tmp, "tap.err"), "w+")
            tap = subprocess.Popen([os.path.join(BIN, "specwatch-tap"), "--endpoint", svc.publish_endpoint,
                                    "--json", "--seconds", "20", "--record", record_path,
                                    "--topics", "denoised,snapshot"], stdout=tap_out, stderr=tap_err)
            raw = RawCapture(svc.frames_endpoint)
            raw.start()
            sim = subprocess.run([os.path.join(BIN, "specwatch-sim"), "--modality", "eds", "--channels",
                                  str(channels), "--scan", "%dx%d" % (width, height), "--passes", str(passes),
                                  "--rate", "20000", "--counts", "3000", "--phases", "3", "--seed", "3",
                                  "--endpoint", "@" + svc.frames_endpoint, "--start-delay-s", "1.0", "--hwm", "100000",
                                  "--truth", truth_path], capture_output=True, text=True, timeout=60)
            self.assertEqual(sim.returncode, 0, sim.stderr)
            with open(truth_path) as f:
                truth = json.load(f)
            total = truth["spectra"]
            self.assertEqual(total, width * height * passes)

            # Zero loss at this rate: every spectrum the simulator sent was published, no gaps.
            st = svc.wait_for(lambda s: s.spectra_published >= total, what="all spectra published")
            self.assertEqual(st.spectra_published, total)
            self.assertEqual(st.spectra_rejected, 0)
            self.assertEqual(st.sequence_gaps, 0)
            self.assertTrue(st.series_started)

            # The Python client receives all of it, with shaped payloads and no gaps.
            denoised, snapshots = {}, []
            for ev in subscriber.events(timeout_s=3.0):
                if ev.topic == "denoised":
                    denoised[ev.body.frame_number] = ev
                elif ev.topic == "snapshot":
                    snapshots.append(ev)
                if sum(e.body.spectrum_count for e in denoised.values()) >= total and snapshots \
                        and snapshots[-1].body.reason == "series_end":
                    break
            self.assertEqual(sum(e.body.spectrum_count for e in denoised.values()), total)
            self.assertEqual(subscriber.stats["denoised"].missed, 0)
            self.assertTrue(snapshots)
            snap = snapshots[-1]
            self.assertEqual(snap.body.reason, "series_end")
            self.assertEqual(snap.payload.shape, (1 + rank, channels))
            self.assertEqual(snap.body.spectra_seen, total)

            # Denoising against the noiseless truth: after warm-up, the denoised spectra are much closer
            # to the expected counts than the raw ones (independent check: truth from the simulator).
            phases = np.array([p["spectrum"] for p in truth["phases"]])
            abundances = np.array(truth["abundances"]["values"])  # phases x pixels
            expected = abundances.T @ phases                      # pixels x channels
            raw.stop = True
            raw.join()
            raw_frames = raw.frames()
            self.assertEqual(len(raw_frames), len(denoised), "the raw capture must see every frame")
            xs, dens, truths = [], [], []
            for number, ev in sorted(denoised.items()):
                if ev.body.rank == 0:
                    continue
                self.assertEqual(ev.body.rank, rank)
                start, x = raw_frames[number]
                pixels = (start + np.arange(x.shape[0])) % (width * height)
                np.testing.assert_allclose(ev.body.residual_norm, np.linalg.norm(x - ev.payload, axis=1),
                                           rtol=1e-3, atol=1e-2)
                xs.append(x)
                dens.append(ev.payload)
                truths.append(expected[pixels])
            x, den, exp = np.vstack(xs), np.vstack(dens), np.vstack(truths)
            self.assertGreater(len(x), total // 2)
            gain = np.mean((x - exp) ** 2) / np.mean((den - exp) ** 2)
            # Independent reference: a batch PCA of the same spectra at the same rank.
            everything = np.vstack([f[1] for f in raw_frames.values()])
            mean = everything.mean(axis=0)
            _, _, vt = np.linalg.svd(everything - mean, full_matrices=False)
            batch = mean + (x - mean) @ vt[:rank].T @ vt[:rank]
            batch_gain = np.mean((x - exp) ** 2) / np.mean((batch - exp) ** 2)
            print("\nend to end: MSE raw / MSE denoised = %.1f (%.1f dB) over %d spectra; batch PCA %.1f"
                  % (gain, 10 * np.log10(gain), len(x), batch_gain))
            self.assertGreater(gain, 10.0)
            self.assertGreater(gain, 0.8 * batch_gain)

            # The tap printed JSON lines, counted no gaps, and recorded what it saw.
            tap.terminate()
            self.assertEqual(tap.wait(timeout=10), 0)
            tap_out.seek(0)
            tap_err.seek(0)
            out, err = tap_out.read(), tap_err.read()
            lines = [json.loads(l) for l in out.splitlines() if l.strip()]
            self.assertEqual(sum(1 for l in lines if l["topic"] == "denoised"), len(denoised))
            self.assertIn("denoised: %d messages, 0 missing, 0 restarts" % len(denoised), err)
            self.assertGreater(os.path.getsize(record_path), total * channels * 4)
            subscriber.close()
            code, seconds = svc.stop()
            self.assertEqual(code, 0)
        finally:
            svc.close()

    def test_tap_stops_after_count(self):
        svc = Service(status_period_s=0.05)
        try:
            r = subprocess.run([os.path.join(BIN, "specwatch-tap"), "--endpoint", svc.publish_endpoint,
                                "--count", "3"], capture_output=True, text=True, timeout=20)
            self.assertEqual(r.returncode, 0)
            self.assertEqual(len([l for l in r.stdout.splitlines() if l.startswith("status seq=")]), 3)
        finally:
            svc.stop()
            svc.close()


if __name__ == "__main__":
    unittest.main()
