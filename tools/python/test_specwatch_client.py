#!/usr/bin/python3
"""Self-test of specwatch_client without the service: loopback ZeroMQ sockets on ports chosen at run time.

Run from the repository root:
  /usr/bin/python3 -m unittest tools/python/test_specwatch_client.py
  /usr/bin/python3 tools/python/test_specwatch_client.py
SPECWATCH_PYTHON_PROTO may point at the CMake-generated modules (build/python); without it the test uses
<repo>/build/python or runs protoc itself.
"""

import json
import os
import subprocess
import sys
import threading
import time
import unittest

import numpy as np
import zmq

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import specwatch_client as sc  # noqa: E402

PY = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
DATA = os.path.join(REPO, "..", "shared", "data", "eds_si_FePt_core_shell_64x64x992.npy")
TIMEOUT_MS = 5000


def recv_parts(socket, timeout_ms=TIMEOUT_MS):
    if not socket.poll(timeout_ms, zmq.POLLIN):
        raise AssertionError("nothing received within %d ms" % timeout_ms)
    return socket.recv_multipart()


class Loopback(unittest.TestCase):
    """Base: a private context, closed at the end of each test."""

    def setUp(self):
        self.pb = sc.load_protos()
        self.ctx = zmq.Context()
        self.sockets = []
        self.addCleanup(self._close)   # cleanups run last-in first-out: this one after those of the test

    def _close(self):
        for s in self.sockets:
            s.close(linger=0)
        self.ctx.destroy(linger=0)

    def bound(self, kind):
        """A socket bound to a free loopback port; returns (socket, endpoint)."""
        s = self.ctx.socket(kind)
        s.setsockopt(zmq.LINGER, 0)
        s.bind("tcp://127.0.0.1:*")
        self.sockets.append(s)
        return s, s.getsockopt_string(zmq.LAST_ENDPOINT)

    def track(self, obj):
        self.addCleanup(obj.close)
        return obj


class ProtosTest(unittest.TestCase):
    def test_modules_loaded(self):
        pb = sc.load_protos()
        for name in ("frame", "results", "control", "config"):
            self.assertTrue(hasattr(pb, name))
        self.assertTrue(os.path.isfile(os.path.join(pb.python_dir, "results_pb2.py")))
        self.assertEqual(pb.frame.PAYLOAD_UINT32, sc.PAYLOAD_TYPES["uint32"][0])

    def test_protoc_fallback(self):
        """Without generated modules where they are looked for, load_protos() runs protoc itself."""
        env = dict(os.environ, SPECWATCH_PYTHON_PROTO="/nonexistent")
        code = ("import sys; sys.path.insert(0, %r); import specwatch_client as sc; "
                "sc._REPO = '/nonexistent'; "
                "p = sc.load_protos(proto_dir=%r); print(p.python_dir); "
                "print(p.results.Envelope(sequence=3).sequence)") % (HERE, os.path.join(REPO, "proto"))
        out = subprocess.run([PY, "-c", code], env=env, capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        python_dir, seq = out.stdout.split()
        self.assertIn("specwatch_proto_", python_dir)
        self.assertEqual(seq, "3")
        self.assertFalse(os.path.exists(python_dir), "temporary directory left behind")

    def test_endpoints(self):
        self.assertEqual(sc.parse_endpoints("@tcp://*:1,>tcp://h:2,ipc:///tmp/x", "connect"),
                         [("bind", "tcp://*:1"), ("connect", "tcp://h:2"), ("connect", "ipc:///tmp/x")])
        with self.assertRaises(ValueError):
            sc.parse_endpoints("127.0.0.1:5555", "bind")

    def test_raster_positions(self):
        pos = sc.raster_positions(2 * 12 + 5, 4, width=4, height=3)   # pass 2, y 1, x 1 ...
        np.testing.assert_array_equal(pos, [[1, 1, 2], [2, 1, 2], [3, 1, 2], [0, 2, 2]])


class FramePublisherTest(Loopback):
    def connect_pull(self, publisher):
        pull = self.ctx.socket(zmq.PULL)
        pull.setsockopt(zmq.LINGER, 0)
        pull.connect(publisher.endpoints[0])
        self.sockets.append(pull)
        return pull

    def decode(self, socket, **kw):
        return sc.decode_frame(recv_parts(socket), protos=self.pb, **kw)

    def test_round_trip_push(self):
        pub = self.track(sc.FramePublisher("@tcp://127.0.0.1:*", "push", context=self.ctx))
        pull = self.connect_pull(pub)
        start = pub.start_series("s1", channel_count=5, payload_type="uint16", modality="eds",
                                 energy_axis=(0.16, 0.02, "keV"), scan_shape=(4, 3), dwell_s=1e-3,
                                 beam_current_pA=50.0, pixel_area_A2=25.0, passes=2, start_time_s=123.5)
        got = self.decode(pull)
        self.assertEqual(got.kind, "series_start")
        self.assertEqual(got.message, start)
        m = got.message
        self.assertEqual((m.series_id, m.modality, m.channel_count, m.payload_type, m.passes),
                         ("s1", self.pb.frame.MODALITY_EDS, 5, self.pb.frame.PAYLOAD_UINT16, 2))
        self.assertEqual((m.energy_axis.offset, m.energy_axis.dispersion, m.energy_axis.unit), (0.16, 0.02, "keV"))
        self.assertEqual((m.scan_shape.width, m.scan_shape.height), (4, 3))
        self.assertEqual((m.defaults.dwell_s, m.defaults.beam_current_pA, m.defaults.pixel_area_A2),
                         (1e-3, 50.0, 25.0))
        self.assertEqual(m.start_time_s, 123.5)

        rng = np.random.default_rng(1)
        a = rng.integers(0, 65535, size=(4, 5))
        pub.send_frame(a, acquisition_time_s=1000.25)               # raster continues: start_index 0
        f = self.decode(pull, channel_count=5)
        h = f.message
        self.assertEqual(f.kind, "frame")
        self.assertEqual((h.series_id, h.frame_number, h.spectrum_count, h.channel_count, h.payload_type),
                         ("s1", 0, 4, 5, self.pb.frame.PAYLOAD_UINT16))
        self.assertEqual((h.start_index, len(h.positions), h.acquisition_time_s), (0, 0, 1000.25))
        self.assertEqual(h.modality, self.pb.frame.MODALITY_EDS)
        # self-contained: the series' axis, shape and acquisition defaults repeated in the header
        self.assertEqual((h.energy_axis.offset, h.energy_axis.dispersion, h.energy_axis.unit), (0.16, 0.02, "keV"))
        self.assertEqual((h.scan_shape.width, h.scan_shape.height), (4, 3))
        self.assertEqual(h.acquisition.beam_current_pA, 50.0)
        self.assertEqual(f.spectra.dtype, np.dtype("<u2"))
        np.testing.assert_array_equal(f.spectra, a)

        b = rng.integers(0, 2**32 - 1, size=(3, 5), dtype=np.uint64)
        pub.send_frame(b, payload_type="uint32", positions=[(0, 1), (3, 2), (2, 0)], dwell_s=2e-3,
                       energy_axis={"offset": -5.0, "dispersion": 0.25, "unit": "eV"})
        h = (f := self.decode(pull)).message
        self.assertEqual((h.frame_number, h.payload_type), (1, self.pb.frame.PAYLOAD_UINT32))
        self.assertEqual([(p.x, p.y) for p in h.positions], [(0, 1), (3, 2), (2, 0)])
        self.assertEqual((h.acquisition.dwell_s, h.acquisition.beam_current_pA), (2e-3, 50.0))
        self.assertEqual((h.energy_axis.offset, h.energy_axis.unit), (-5.0, "eV"))
        np.testing.assert_array_equal(f.spectra, b)

        c = rng.random((2, 5)).astype(np.float64) * 10
        pub.send_frame(c, 7, payload_type="float32", start_index=13)  # pass 1, y 0, x 1
        h = (f := self.decode(pull)).message
        self.assertEqual((h.frame_number, h.start_index, h.payload_type), (7, 13, self.pb.frame.PAYLOAD_FLOAT32))
        self.assertEqual(f.spectra.dtype, np.dtype("<f4"))
        np.testing.assert_allclose(f.spectra, c, rtol=1e-7)
        self.assertEqual(f.spectra.tobytes(), c.astype("<f4").tobytes())

        pub.send_frame(np.ones(5, dtype=np.uint16))                 # 1-D: one spectrum, continues after 13+2
        h = self.decode(pull).message
        self.assertEqual((h.frame_number, h.start_index, h.spectrum_count), (8, 15, 1))

        end = pub.end_series()
        got = self.decode(pull)
        self.assertEqual(got.kind, "series_end")
        self.assertEqual((got.message.series_id, got.message.frames_sent, got.message.spectra_sent), ("s1", 4, 10))
        self.assertEqual(got.message, end)

    def test_pub_waits_for_subscriber(self):
        pub = self.track(sc.FramePublisher("@tcp://127.0.0.1:*", "pub", context=self.ctx))
        self.assertFalse(pub.wait_for_subscribers(0.05))
        sub = self.ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(pub.endpoints[0])
        self.sockets.append(sub)
        self.assertTrue(pub.wait_for_subscribers(5.0))
        pub.start_series("p", channel_count=3, payload_type="float32")
        pub.send_frame(np.array([[1.0, 2.0, 3.0]]))
        self.assertEqual(sc.decode_frame(recv_parts(sub), protos=self.pb).kind, "series_start")
        f = sc.decode_frame(recv_parts(sub), protos=self.pb)
        np.testing.assert_array_equal(f.spectra, [[1, 2, 3]])

    def test_implicit_series(self):
        pub = self.track(sc.FramePublisher("@tcp://127.0.0.1:*", "push", context=self.ctx))
        pull = self.connect_pull(pub)
        pub.send_frame(np.zeros((2, 4), np.uint32), series_id="late", modality="eels", scan_shape=(2, 2),
                       energy_axis=(0.0, 0.5, "eV"))
        pub.send_frame(np.zeros((2, 4), np.uint32))
        for number in (0, 1):
            h = self.decode(pull).message
            self.assertEqual((h.series_id, h.frame_number, h.start_index), ("late", number, 2 * number))
            self.assertEqual((h.modality, h.payload_type), (self.pb.frame.MODALITY_EELS, self.pb.frame.PAYLOAD_UINT32))
            self.assertEqual((h.scan_shape.width, h.energy_axis.dispersion), (2, 0.5))

    def test_validation(self):
        pub = self.track(sc.FramePublisher("@tcp://127.0.0.1:*", "push", context=self.ctx, linger_s=0,
                                           send_timeout_s=0.1))
        with self.assertRaises(sc.SendTimeout):      # PUSH without a receiver
            pub.start_series("v", channel_count=3, payload_type="uint16", scan_shape=(2, 2))
        self.connect_pull(pub)
        pub.start_series("v", channel_count=3, payload_type="uint16", scan_shape=(2, 2))
        bad = [
            (dict(spectra=np.array([[70000, 0, 0]])), "fit"),
            (dict(spectra=np.array([[-1, 0, 0]])), "fit"),
            (dict(spectra=np.array([[0.5, 0, 0]])), "whole"),
            (dict(spectra=np.zeros((1, 4))), "channels"),
            (dict(spectra=np.zeros((1, 3)), positions=[(0, 0)], start_index=0), "not both"),
            (dict(spectra=np.zeros((2, 3)), positions=[(0, 0)]), "positions"),
            (dict(spectra=np.zeros((1, 3)), positions=[(2, 0)]), "outside"),
            (dict(spectra=np.array([[np.nan, 0, 0]]), payload_type="float32"), "NaN"),
            (dict(spectra=np.array([[-1.0, 0, 0]]), payload_type="float32"), "negative"),
            (dict(spectra=np.zeros((1, 3)), payload_type="int8"), "payload type"),
        ]
        for kwargs, message in bad:
            with self.subTest(message=message), self.assertRaisesRegex(ValueError, message):
                pub.send_frame(**kwargs)
        self.assertEqual(pub.frames_sent, 0)

    def test_rejection_reasons(self):
        """decode_frame() refuses what the service must reject, with the documented reason labels."""
        pub = self.track(sc.FramePublisher("@tcp://127.0.0.1:*", "push", context=self.ctx, validate=False))
        pull = self.connect_pull(pub)
        pub.start_series("r", channel_count=3, payload_type="float32")
        self.decode(pull)
        header = self.pb.frame.DetectorMessage(frame=self.pb.frame.FrameHeader(
            series_id="r", channel_count=3, spectrum_count=1, payload_type=self.pb.frame.PAYLOAD_FLOAT32))
        good = np.zeros(3, "<f4").tobytes()

        def reason(parts=None, **kw):
            if parts is not None:
                pub.send_raw(parts)
            with self.assertRaises(sc.FrameRejected) as cm:
                self.decode(pull, **kw)
            self.assertIn(cm.exception.reason, sc.REJECT_REASONS)
            return cm.exception.reason

        self.assertEqual(reason([header.SerializeToString()]), "part_count")
        self.assertEqual(reason([header.SerializeToString(), good, good]), "part_count")
        start = self.pb.frame.DetectorMessage(series_start=self.pb.frame.SeriesStart(series_id="x"))
        self.assertEqual(reason([start.SerializeToString(), good]), "part_count")
        self.assertEqual(reason([b"\xff\xff\xff", good]), "header_parse")
        self.assertEqual(reason([b"", good]), "header_parse")
        self.assertEqual(reason([header.SerializeToString(), good[:-1]]), "payload_size")
        positions = self.pb.frame.DetectorMessage()
        positions.CopyFrom(header)
        positions.frame.positions.add(x=0, y=0)
        positions.frame.positions.add(x=1, y=0)
        self.assertEqual(reason([positions.SerializeToString(), good]), "bad_positions")
        no_id = self.pb.frame.DetectorMessage()
        no_id.CopyFrom(header)
        no_id.frame.series_id = ""
        self.assertEqual(reason([no_id.SerializeToString(), good]), "header_parse")
        pub.send_raw([header.SerializeToString(), good])
        self.assertEqual(reason(channel_count=4), "channel_mismatch")
        pub.send_raw([header.SerializeToString(), good])
        self.assertEqual(reason(max_message_bytes=10), "too_large")
        unknown = self.pb.frame.DetectorMessage()
        unknown.CopyFrom(header)
        unknown.frame.payload_type = 0
        self.assertEqual(reason([unknown.SerializeToString(), good]), "payload_type")
        unknown.frame.payload_type = 9
        self.assertEqual(reason([unknown.SerializeToString(), good]), "payload_type")
        for value in (np.nan, np.inf, -1.0):
            pub.send_frame(np.array([[value, 0, 0]]))
            self.assertEqual(reason(), "bad_value")


class EventSubscriberTest(Loopback):
    EPOCH = 0x1234_5678_9ABC_DEF0

    def setUp(self):
        super().setUp()
        # XPUB so the test knows when the subscription arrived (a PUB drops what it sends before that)
        self.pub, self.endpoint = self.bound(zmq.XPUB)

    def subscriber(self, topics=sc.TOPICS, **kw):
        sub = self.track(sc.EventSubscriber(">" + self.endpoint, topics, context=self.ctx, **kw))
        for _ in (list(topics) if topics else [""]):
            self.assertTrue(self.pub.poll(TIMEOUT_MS, zmq.POLLIN), "no subscription")
            self.pub.recv()
        return sub

    def envelope(self, seq, epoch=EPOCH, **body):
        return self.pb.results.Envelope(publisher_epoch=epoch, sequence=seq, publish_time_s=time.time(),
                                        series_id="s1", **body)

    def denoised(self, seq, frame, n=2, channels=3, epoch=EPOCH):
        batch = self.pb.results.DenoisedBatch(frame_number=frame, spectrum_count=n, channel_count=channels,
                                              residual_norm=[0.5] * n, rank=2, model_version=frame + 1)
        batch.positions.add(x=1, y=0)
        batch.positions.add(x=2, y=0)
        batch.scan_pass = 1
        payload = np.arange(n * channels, dtype=np.float32).reshape(n, channels) + frame
        self.pub.send_multipart(sc.encode_result("denoised", self.envelope(seq, epoch, denoised=batch), payload))
        return payload

    def status(self, seq, epoch=EPOCH):
        status = self.pb.results.Status(state="running", frames_received=seq)
        self.pub.send_multipart(sc.encode_result("status", self.envelope(seq, epoch, status=status)))

    def test_decode_gaps_restarts(self):
        sub = self.subscriber()
        sent = [self.denoised(1, 0), self.denoised(2, 1)]
        self.status(5)                           # joined late on status: not a gap
        sent.append(self.denoised(5, 4))         # denoised 3, 4 lost
        snapshot = self.pb.results.ModelSnapshot(rank=2, channel_count=3, singular_values=[3.0, 1.0],
                                                 explained_variance=[0.6, 0.2], model_version=9, reason="request")
        snap_payload = np.arange(9, dtype=np.float32).reshape(3, 3)
        self.pub.send_multipart(sc.encode_result("snapshot", self.envelope(1, snapshot=snapshot), snap_payload))
        sent.append(self.denoised(1, 0, epoch=7))  # service restarted
        self.status(1, epoch=7)
        self.status(3, epoch=7)                  # status 2 lost
        self.status(3, epoch=7)                  # duplicate

        events = list(sub.events(timeout_s=2.0, count=9))
        self.assertEqual([e.topic for e in events], ["denoised", "denoised", "status", "denoised", "snapshot",
                                                     "denoised", "status", "status", "status"])
        d = [e for e in events if e.topic == "denoised"]
        for e, payload in zip(d, sent):
            self.assertEqual(e.kind, "denoised")
            self.assertEqual(e.payload.shape, (2, 3))
            np.testing.assert_array_equal(e.payload, payload)
            self.assertEqual([(p.x, p.y) for p in e.body.positions], [(1, 0), (2, 0)])
            self.assertEqual(e.body.scan_pass, 1)
            self.assertEqual(e.series_id, "s1")
        self.assertEqual([(e.first, e.missed, e.restart) for e in d],
                         [(True, 0, False), (False, 0, False), (False, 2, False), (False, 0, True)])
        self.assertEqual(d[3].epoch, 7)
        st = [e for e in events if e.topic == "status"]
        self.assertEqual([(e.first, e.missed, e.restart, e.duplicate) for e in st],
                         [(True, 0, False, False), (False, 0, True, False), (False, 1, False, False),
                          (False, 0, False, True)])
        self.assertIsNone(st[0].payload)
        self.assertEqual(st[0].body.state, "running")
        snap = events[4]
        self.assertEqual(snap.payload.shape, (3, 3))
        np.testing.assert_array_equal(snap.mean, [0, 1, 2])
        np.testing.assert_array_equal(snap.components, [[3, 4, 5], [6, 7, 8]])
        self.assertEqual(list(snap.body.singular_values), [3.0, 1.0])

        s = sub.stats
        self.assertEqual((s["denoised"].received, s["denoised"].missed, s["denoised"].gaps, s["denoised"].restarts),
                         (4, 2, 1, 1))
        self.assertEqual((s["status"].received, s["status"].missed, s["status"].restarts, s["status"].duplicates),
                         (4, 1, 1, 1))
        self.assertEqual((s["status"].first_sequence, s["status"].last_sequence), (1, 3))
        self.assertEqual((s["snapshot"].received, s["snapshot"].missed), (1, 0))
        self.assertEqual(sub.restarts, 1)
        self.assertEqual(sub.epoch, 7)

    def test_scores_only_rebuilt_from_the_snapshot_of_their_version(self):
        sub = self.subscriber()
        mean = np.array([1.0, 2.0, 3.0], dtype=np.float32)
        comps = np.array([[1.0, 0.0, 0.0], [0.0, 0.6, 0.8]], dtype=np.float32)
        for version, scale in ((4, 1.0), (5, 2.0)):  # two versions held at once
            snapshot = self.pb.results.ModelSnapshot(rank=2, channel_count=3, model_version=version,
                                                     reason="model_update")
            self.pub.send_multipart(sc.encode_result("snapshot", self.envelope(version - 3, snapshot=snapshot),
                                                     np.vstack([mean * scale, comps])))
        scores = np.array([[1.0, -2.0], [0.5, 4.0]], dtype=np.float32)
        for seq, version in ((1, 4), (2, 5), (3, 6)):  # version 6's snapshot never came
            batch = self.pb.results.DenoisedBatch(frame_number=seq, spectrum_count=2, channel_count=3, rank=2,
                                                  model_version=version, scores=scores.ravel().tolist(),
                                                  spectra_omitted=True, residual_norm=[0.0, 0.0])
            self.pub.send_multipart(sc.encode_result("denoised", self.envelope(seq, denoised=batch)))
        events = [e for e in sub.events(timeout_s=2.0, count=5) if e.topic == "denoised"]
        self.assertEqual(len(events), 3)
        np.testing.assert_allclose(events[0].scores, scores)
        np.testing.assert_allclose(events[0].payload, mean + scores @ comps, rtol=1e-6)
        np.testing.assert_allclose(events[1].payload, 2 * mean + scores @ comps, rtol=1e-6)
        self.assertEqual([(e.rebuilt, e.model_missing) for e in events], [(True, False), (True, False),
                                                                          (False, True)])
        self.assertIsNone(events[2].payload)
        self.assertEqual(sub.models_missing, 1)

    def test_residual_map_and_rank_change(self):
        sub = self.subscriber()
        image = np.arange(12, dtype=np.float32).reshape(3, 4)
        image[1, 2] = np.nan
        rmap = self.pb.results.ResidualMap(width=4, height=3, scan_pass=2, statistic="deviance_z",
                                           closed_by="complete", outlier_threshold=10.0)
        self.pub.send_multipart(sc.encode_result("residual_map", self.envelope(1, residual_map=rmap), image))
        change = self.pb.results.RankChange(old_rank=2, new_rank=3, model_version=40, first_index=0,
                                            singular_values=[9.0, 5.0, 4.0, 1.0], rank_threshold=3.0)
        self.pub.send_multipart(sc.encode_result("model", self.envelope(1, rank_change=change)))
        events = list(sub.events(timeout_s=2.0, count=2))
        self.assertEqual([(e.topic, e.kind) for e in events], [("residual_map", "residual_map"),
                                                               ("model", "rank_change")])
        m = events[0]
        self.assertEqual(m.payload.shape, (3, 4))               # [height, width]
        np.testing.assert_array_equal(m.payload, image)          # NaN where no value (assert_array_equal: NaN == NaN)
        self.assertEqual(m.body.scan_pass, 2)
        self.assertIsNone(events[1].payload)
        self.assertEqual((events[1].body.old_rank, events[1].body.new_rank), (2, 3))
        # a map whose payload does not match width x height is malformed
        self.pub.send_multipart(sc.encode_result("residual_map", self.envelope(2, residual_map=rmap), image[:2]))
        self.assertIsNone(sub.receive(timeout_s=0.5))
        self.assertEqual(sub.malformed, 1)

    def test_topic_filter_and_malformed(self):
        sub = self.subscriber(["status"])
        self.denoised(1, 0)                                          # not subscribed
        self.pub.send_multipart([b"statusx", self.envelope(1).SerializeToString()])  # prefix match, dropped
        self.pub.send_multipart([b"status", b"\xff\xff"])             # malformed envelope
        self.pub.send_multipart([b"status"])                          # one part
        self.status(1)
        with self.assertLogs("specwatch_client", "WARNING") as logs:
            events = list(sub.events(timeout_s=0.5))
        self.assertEqual(len(logs.records), 2)
        self.assertEqual([(e.topic, e.sequence) for e in events], [("status", 1)])
        self.assertEqual(sub.malformed, 2)
        self.assertEqual(list(sub.stats), ["status"])

    def test_payload_size_checked(self):
        sub = self.subscriber(strict=True)
        batch = self.pb.results.DenoisedBatch(spectrum_count=2, channel_count=3)
        self.pub.send_multipart(sc.encode_result("denoised", self.envelope(1, denoised=batch), np.zeros(5)))
        with self.assertRaises(sc.ProtocolError):
            sub.receive(timeout_s=2.0)

    def test_all_topics_reserved(self):
        sub = self.subscriber(None)
        self.pub.send_multipart([b"novelty", self.envelope(1).SerializeToString(), b"\x00" * 8])
        e = sub.receive(timeout_s=2.0)
        self.assertEqual((e.topic, e.kind, e.payload, e.raw_payload.nbytes), ("novelty", None, None, 8))

    def test_duration_and_idle(self):
        sub = self.subscriber()
        t0 = time.monotonic()
        self.assertEqual(list(sub.events(duration_s=0.3)), [])
        self.assertGreaterEqual(time.monotonic() - t0, 0.29)
        self.assertIsNone(sub.receive(timeout_s=0.05))


class ControlClientTest(Loopback):
    def serve(self, replies):
        """A REP server answering len(replies) requests; None = don't answer that one (the client times out)."""
        rep, endpoint = self.bound(zmq.REP)
        seen = []

        def run():
            for reply in replies:
                if not rep.poll(TIMEOUT_MS, zmq.POLLIN):
                    return
                request = self.pb.control.ControlRequest()
                request.ParseFromString(rep.recv())
                seen.append(request.command)
                if reply is None:
                    rep.close(linger=0)   # the "service" dies without answering
                    return
                rep.send(reply.SerializeToString())

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self.addCleanup(thread.join, 5)
        return endpoint, seen, thread

    def test_commands(self):
        pb = self.pb.control
        status = self.pb.results.Status(state="frozen", frames_received=42, rank=8)
        replies = [pb.ControlReply(ok=True, status=status), pb.ControlReply(ok=True, message="model reset"),
                   pb.ControlReply(ok=False, message="already frozen"), pb.ControlReply(ok=True)]
        endpoint, seen, thread = self.serve(replies)
        client = self.track(sc.ControlClient(">" + endpoint, context=self.ctx, timeout_s=5))
        self.assertEqual(client.status().frames_received, 42)
        self.assertEqual(client.request("reset").message, "model reset")
        with self.assertRaises(sc.ControlError) as cm:
            client.freeze()
        self.assertEqual(cm.exception.reply.message, "already frozen")
        self.assertTrue(client.request(pb.COMMAND_SNAPSHOT).ok)
        thread.join(5)
        self.assertEqual(seen, [pb.COMMAND_STATUS, pb.COMMAND_RESET_MODEL, pb.COMMAND_FREEZE, pb.COMMAND_SNAPSHOT])
        with self.assertRaises(ValueError):
            client.command_value("explode")

    def test_save_model_sends_the_path(self):
        rep, endpoint = self.bound(zmq.REP)
        seen = []

        def answer():
            if rep.poll(TIMEOUT_MS, zmq.POLLIN):
                request = self.pb.control.ControlRequest()
                request.ParseFromString(rep.recv())
                seen.append((request.command, request.path))
                rep.send(self.pb.control.ControlReply(ok=True, message="saved").SerializeToString())

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        client = self.track(sc.ControlClient(">" + endpoint, context=self.ctx, timeout_s=5))
        self.assertEqual(client.save_model("/var/lib/specwatch/m.snap").message, "saved")
        thread.join(5)
        self.assertEqual(seen, [(self.pb.control.COMMAND_SAVE_MODEL, "/var/lib/specwatch/m.snap")])

    def test_timeout_then_recover(self):
        rep, endpoint = self.bound(zmq.REP)
        client = self.track(sc.ControlClient(">" + endpoint, context=self.ctx, timeout_s=0.2))
        t0 = time.monotonic()
        with self.assertRaises(sc.ControlTimeout):
            client.request("status")
        self.assertLess(time.monotonic() - t0, 2.0)
        rep.recv()   # the lost request; REP must answer it before reading the next
        rep.send(self.pb.control.ControlReply(ok=False).SerializeToString())
        # the client dropped its REQ socket: a new one is connected for the next request
        answered = threading.Thread(target=lambda: (rep.recv(), rep.send(
            self.pb.control.ControlReply(ok=True, message="back").SerializeToString())), daemon=True)
        answered.start()
        self.assertEqual(client.request("resume", timeout_s=5).message, "back")
        answered.join(5)


class SnapshotFileTest(unittest.TestCase):
    def test_the_last_snapshot_of_a_recording_is_the_model(self):
        import struct
        import tempfile
        pb = sc.load_protos()

        def record(f, parts):
            f.write(struct.pack("<I", len(parts)))
            for p in parts:
                f.write(struct.pack("<Q", len(p)) + p)

        payload = np.arange(6, dtype=np.float32).reshape(2, 3)
        with tempfile.NamedTemporaryFile(suffix=".tap", delete=False) as f:
            for version in (3, 4):
                env = pb.results.Envelope(snapshot=pb.results.ModelSnapshot(rank=1, channel_count=3,
                                                                             model_version=version))
                record(f, sc.encode_result("snapshot", env, payload + version))
                record(f, sc.encode_result("status", pb.results.Envelope()))
        self.addCleanup(os.remove, f.name)
        self.assertEqual([p[0] for p in sc.read_recording(f.name)], [b"snapshot", b"status"] * 2)
        model = sc.load_snapshot_file(f.name, protos=pb)
        self.assertEqual(model.body.model_version, 4)
        np.testing.assert_array_equal(model.mean, [4, 5, 6])
        np.testing.assert_array_equal(model.components, [[7, 8, 9]])
        with open(f.name, "ab") as g:
            g.write(b"\x02\x00")                       # cut inside a message header
        with self.assertRaises(sc.ProtocolError):
            sc.load_snapshot_file(f.name, protos=pb)


class ConfigExampleTest(unittest.TestCase):
    def test_deploy_config_parses_and_sets_every_field(self):
        from google.protobuf import text_format
        pb = sc.load_protos()
        with open(os.path.join(REPO, "deploy", "specwatch.conf")) as f:
            config = text_format.Parse(f.read(), pb.config.ServiceConfig())   # unknown fields refused

        def unset(message, prefix=""):
            missing = []
            for field in message.DESCRIPTOR.fields:
                if not message.HasField(field.name):
                    missing.append(prefix + field.name)
                elif field.message_type is not None:
                    missing += unset(getattr(message, field.name), prefix + field.name + ".")
            return missing

        self.assertEqual(unset(config), [], "deploy/specwatch.conf should show every field")
        self.assertEqual(config.frames_endpoint, ">tcp://127.0.0.1:5555")
        self.assertEqual(config.pca.rank, 8)

    def test_deploy_json_valid(self):
        for name in ("grafana-dashboard.json",):
            with open(os.path.join(REPO, "deploy", name)) as f:
                json.load(f)


class CommandLineTest(Loopback):
    def run_tool(self, name, *args, timeout=60):
        out = subprocess.run([PY, os.path.join(HERE, name), *args], capture_output=True, text=True,
                             timeout=timeout)
        return out

    def test_help(self):
        for name in ("publish_frames.py", "subscribe_events.py", "control.py"):
            with self.subTest(name=name):
                out = self.run_tool(name, "--help")
                self.assertEqual(out.returncode, 0, out.stderr)
                self.assertIn("usage:", out.stdout)
                with open(os.path.join(HERE, name)) as f:
                    self.assertEqual(f.readline().strip(), "#!/usr/bin/python3")

    def collect_frames(self, pull, until_end=True):
        frames, series = [], []
        while True:
            d = sc.decode_frame(recv_parts(pull, 20000), protos=self.pb)
            if d.kind == "frame":
                frames.append(d)
            else:
                series.append(d)
                if d.kind == "series_end":
                    return frames, series

    def test_publish_synthetic(self):
        pull, endpoint = self.bound(zmq.PULL)
        out = self.run_tool("publish_frames.py", "--synthetic", "6x5x40", "--passes", "2", "--socket", "push",
                            "--endpoint", ">" + endpoint, "--series-id", "syn", "--explicit-positions",
                            "--modality", "raman", "--quiet")
        self.assertEqual(out.returncode, 0, out.stderr)
        frames, series = self.collect_frames(pull)
        self.assertEqual(series[0].kind, "series_start")
        self.assertEqual((series[0].message.scan_shape.width, series[0].message.scan_shape.height), (5, 6))
        self.assertEqual(len(frames), 12)
        self.assertEqual(series[1].message.frames_sent, 12)
        self.assertEqual(series[1].message.spectra_sent, 60)
        self.assertEqual([(p.x, p.y) for p in frames[7].message.positions], [(x, 1) for x in range(5)])
        self.assertEqual(frames[0].message.modality, self.pb.frame.MODALITY_RAMAN)

    @unittest.skipUnless(os.path.exists(DATA), "shared EDS data set not available")
    def test_publish_measured_eds(self):
        pull, endpoint = self.bound(zmq.PULL)
        out = self.run_tool("publish_frames.py", "--npy", DATA, "--socket", "push", "--endpoint", ">" + endpoint,
                            "--quiet")
        self.assertEqual(out.returncode, 0, out.stderr)
        frames, series = self.collect_frames(pull)
        start = series[0].message
        self.assertEqual((start.channel_count, start.payload_type, start.modality),
                         (992, self.pb.frame.PAYLOAD_UINT32, self.pb.frame.MODALITY_EDS))
        self.assertEqual((start.energy_axis.offset, start.energy_axis.dispersion, start.energy_axis.unit),
                         (0.16, 0.02, "keV"))
        self.assertAlmostEqual(start.defaults.pixel_area_A2, 25.0)
        self.assertEqual(len(frames), 64)
        self.assertEqual([f.message.start_index for f in frames[:3]], [0, 64, 128])
        cube = np.load(DATA)
        np.testing.assert_array_equal(frames[10].spectra, cube[10])
        self.assertEqual(sum(int(f.spectra.sum()) for f in frames), int(cube.sum()))

    def test_subscribe_cli(self):
        pub, endpoint = self.bound(zmq.XPUB)
        proc = subprocess.Popen([PY, os.path.join(HERE, "subscribe_events.py"), "--endpoint", ">" + endpoint,
                                 "--json", "--count", "3", "--seconds", "30"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.addCleanup(proc.kill)
        for _ in sc.TOPICS:
            self.assertTrue(pub.poll(20000, zmq.POLLIN), "subscriber never connected")
            pub.recv()
        for seq in (1, 2, 4):
            env = self.pb.results.Envelope(publisher_epoch=5, sequence=seq,
                                           status=self.pb.results.Status(state="running"))
            pub.send_multipart(sc.encode_result("status", env))
        stdout, stderr = proc.communicate(timeout=30)
        self.assertEqual(proc.returncode, 0, stderr)
        lines = [json.loads(line) for line in stdout.splitlines()]
        self.assertEqual([line["missed"] for line in lines], [0, 0, 1])
        self.assertEqual(lines[2]["envelope"]["status"]["state"], "running")
        self.assertIn("missed=1", stderr)

    def test_control_cli(self):
        rep, endpoint = self.bound(zmq.REP)

        def answer():
            if rep.poll(20000, zmq.POLLIN):
                rep.recv()
                status = self.pb.results.Status(state="running", frames_received=3, series_id="s")
                rep.send(self.pb.control.ControlReply(ok=True, status=status).SerializeToString())

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        out = self.run_tool("control.py", "status", "--endpoint", ">" + endpoint)
        thread.join(5)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("received 3", out.stdout)
        out = self.run_tool("control.py", "shutdown", "--endpoint", ">" + endpoint, "--timeout-s", "0.2")
        self.assertEqual(out.returncode, 3)


if __name__ == "__main__":
    unittest.main()
