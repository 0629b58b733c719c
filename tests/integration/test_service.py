"""The service as an operator meets it: command line and config errors, control commands, series
handling, late joining, gaps, rate-limited logs, and a clean stop on SIGINT/SIGTERM."""

import os
import signal
import subprocess
import tempfile
import time
import unittest

from harness import BIN, FrameSender, Service, Subscriber, control_pb2, frame_pb2, results_pb2, run

SPECWATCH = os.path.join(BIN, "specwatch")


class CommandLineTest(unittest.TestCase):
    def test_help_lists_the_options(self):
        r = run([SPECWATCH, "--help"])
        self.assertEqual(r.returncode, 0)
        for word in ("--config", "--frames", "--publish", "--control", "--metrics", "pca {", "forgetting"):
            self.assertIn(word, r.stdout)

    def assert_config_refused(self, text, name):
        with tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False) as f:
            f.write(text)
        try:
            r = run([SPECWATCH, "--config", f.name])
            self.assertEqual(r.returncode, 2)
            self.assertIn(name, r.stderr)
        finally:
            os.remove(f.name)

    def test_unknown_config_key_is_refused_by_name(self):
        self.assert_config_refused("pca { rank: 4 }\nsnapshot_perod_s: 3\n", "snapshot_perod_s")

    def test_out_of_range_value_is_refused_by_name(self):
        self.assert_config_refused("pca { forgetting: 2.0 }\n", "forgetting")

    def test_unknown_flag_and_bad_endpoint(self):
        r = run([SPECWATCH, "--frams", "tcp://127.0.0.1:1"])
        self.assertEqual(r.returncode, 2)
        self.assertIn("--frams", r.stderr)
        r = run([SPECWATCH, "--publish", "127.0.0.1:9", "--metrics", ""])
        self.assertEqual(r.returncode, 2)
        self.assertIn("publish endpoint", r.stderr)


class ServiceTest(unittest.TestCase):
    def setUp(self):
        self.service = None

    def tearDown(self):
        if self.service:
            self.service.close()

    def start(self, *args, **kw):
        self.service = Service(*args, **kw)
        return self.service

    def test_sigterm_and_sigint_finish_frames_in_flight_and_exit_0_within_2_s(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            svc = self.start("--rank", "3")
            sub = Subscriber(svc, topics=(b"denoised",))
            sender = FrameSender(svc, channels=512)
            sender.start_series()
            for _ in range(300):
                sender.send_frame(32)
            svc.wait_for(lambda s: s.frames_received >= 50, what="frames arriving")
            code, seconds = svc.stop(sig)
            self.assertEqual(code, 0, svc.log())
            self.assertLess(seconds, 2.0)
            # The last status, published on the way out, says everything accepted was published...
            got = []
            while sub.sock.poll(200):
                parts = sub.sock.recv_multipart()
                env = results_pb2.Envelope()
                env.ParseFromString(parts[1])
                got.append((parts[0], env))
            finals = [e.status for t, e in got if t == b"status"]
            self.assertTrue(finals)
            final = finals[-1]
            self.assertEqual(final.state, "stopping")
            self.assertEqual(final.spectra_received, final.spectra_published + final.spectra_rejected)
            self.assertEqual(final.spectra_rejected, 0)
            # ... and the subscriber saw every one of them.
            denoised = sum(e.denoised.spectrum_count for t, e in got if t == b"denoised")
            self.assertEqual(denoised, final.spectra_published)
            self.assertIn("stopped", svc.log())
            sub.close()
            sender.close()
            svc.close()

    def test_control_freeze_resume_reset_snapshot_shutdown(self):
        svc = self.start("--rank", "3", config_text="pca { block: 16 warmup_spectra: 32 calibration_spectra: 32 auto_rank: false }\nmodel_updates: \"all\"\n")
        sub = Subscriber(svc, topics=(b"snapshot",))
        sender = FrameSender(svc)
        sender.start_series()

        def feed(frames):
            st0 = svc.status()
            for _ in range(frames):
                sender.send_frame(16)
            return svc.wait_for(lambda s: s.spectra_published >= st0.spectra_published + 16 * frames,
                                what="frames published")

        feed(10)
        version = svc.wait_for(lambda s: s.model_version > 0, what="model learning").model_version

        r = svc.control(control_pb2.COMMAND_FREEZE)
        self.assertTrue(r.ok)
        self.assertEqual(r.status.state, "frozen")
        time.sleep(0.2)  # an update already running when the freeze arrived may still finish
        version = svc.status().model_version
        st = feed(10)
        self.assertEqual(svc.status().model_version, version, "frozen model must not change")

        self.assertTrue(svc.control(control_pb2.COMMAND_RESUME).ok)
        feed(10)
        after = svc.wait_for(lambda s: s.model_version > version, what="updates resumed")
        self.assertEqual(after.state, "running")

        r = svc.control(control_pb2.COMMAND_SNAPSHOT)
        self.assertTrue(r.ok)
        snaps = sub.messages(timeout_s=5, until=lambda g: any(t == "snapshot" for t, _, _ in g))
        snap = [e.snapshot for t, e, _ in snaps if t == "snapshot"][-1]
        payload = [p for t, _, p in snaps if t == "snapshot"][-1]
        self.assertEqual(snap.reason, "request")
        self.assertEqual(snap.rank, 3)
        self.assertEqual(snap.channel_count, 128)
        self.assertEqual(len(payload), (1 + 3) * 128 * 4)
        self.assertEqual(len(snap.singular_values), 3)
        self.assertGreaterEqual(snap.singular_values[0], snap.singular_values[1])

        self.assertTrue(svc.control(control_pb2.COMMAND_RESET_MODEL).ok)
        st = svc.wait_for(lambda s: s.model_version == 0 and s.spectra_in_model == 0, what="reset")
        self.assertEqual(st.rank, 0)

        r = svc.control(control_pb2.COMMAND_SHUTDOWN)
        self.assertTrue(r.ok)
        self.assertEqual(svc.proc.wait(timeout=3), 0)
        sub.close()
        sender.close()

    def test_unparsable_control_request_gets_an_error_reply(self):
        import zmq
        svc = self.start()
        req = zmq.Context.instance().socket(zmq.REQ)
        req.connect("tcp://127.0.0.1:%d" % svc.control_port)
        req.send(b"\xff\xff\xff")
        self.assertTrue(req.poll(3000))
        reply = control_pb2.ControlReply()
        reply.ParseFromString(req.recv())
        self.assertFalse(reply.ok)
        req.close()
        self.assertIsNone(svc.proc.poll())

    def test_series_end_snapshot_and_model_carries_over_to_the_next_series(self):
        svc = self.start("--rank", "3", config_text="pca { block: 16 warmup_spectra: 16 calibration_spectra: 16 }\nmodel_updates: \"all\"\n")
        sub = Subscriber(svc, topics=(b"snapshot", b"denoised"))
        sender = FrameSender(svc)
        sender.start_series("first")
        for _ in range(8):
            sender.send_frame(16)
        sender.end_series()
        got = sub.messages(timeout_s=5, until=lambda g: any(t == "snapshot" for t, _, _ in g))
        snaps = [e for t, e, _ in got if t == "snapshot"]
        self.assertEqual(snaps[-1].snapshot.reason, "series_end")
        self.assertEqual(snaps[-1].series_id, "first")
        self.assertEqual(snaps[-1].snapshot.spectra_seen, 128)
        # Positions come from the raster index in the series' scan shape (16 x 4).
        first_frames = [e.denoised for t, e, _ in got if t == "denoised"]
        self.assertEqual((first_frames[1].positions[0].x, first_frames[1].positions[0].y), (0, 1))
        sender.start_series("second")
        for _ in range(4):
            sender.send_frame(16)
        st = svc.wait_for(lambda s: s.spectra_in_model >= 192, what="model carried over")
        self.assertEqual(st.series_id, "second")
        self.assertTrue(st.series_started)
        self.assertIn("series 'second' started", svc.log())
        sub.close()
        sender.close()

    def test_reset_on_new_series_when_configured(self):
        svc = self.start("--rank", "3", config_text="pca { block: 16 reset_on_new_series: true }\n"
                                                   "model_updates: \"all\"\n")
        sender = FrameSender(svc)
        sender.start_series("a")
        for _ in range(8):
            sender.send_frame(16)
        svc.wait_for(lambda s: s.spectra_in_model >= 128, what="learning series a")
        sender.start_series("b")
        for _ in range(2):
            sender.send_frame(16)
        # Without the reset the model would hold 160 spectra; with it, the 32 of series b once learnt.
        st = svc.wait_for(lambda s: s.series_id == "b" and s.spectra_published >= 160 and s.spectra_in_model >= 32,
                          what="series b learnt")
        self.assertEqual(st.spectra_in_model, 32)
        sender.close()

    def test_late_joiner_works_from_frame_headers_with_a_warning(self):
        svc = self.start()
        sender = FrameSender(svc, series_id="already-running")
        sender.next_frame = 500
        for _ in range(5):
            sender.send_frame(16)
        st = svc.wait_for(lambda s: s.spectra_published >= 80, what="late frames published")
        self.assertEqual(st.series_id, "already-running")
        self.assertFalse(st.series_started)
        self.assertEqual(st.sequence_gaps, 0, "frames before joining are not gaps")
        self.assertIn("without a series start", svc.log())
        sender.close()

    def test_gaps_in_frame_numbers_are_counted(self):
        svc = self.start()
        sender = FrameSender(svc)
        sender.start_series()
        for n in (0, 1, 5, 6, 10):
            sender.send_frame(16, frame_number=n)
        st = svc.wait_for(lambda s: s.spectra_published >= 80, what="frames published")
        self.assertEqual(st.sequence_gaps, 6)  # 2,3,4 and 7,8,9 missing
        m = svc.metrics()
        self.assertEqual(m["specwatch_sequence_gaps_total"][""], 2)
        self.assertEqual(m["specwatch_frames_dropped_total"][""], 6)
        # Frames 11 and 12 never arrive; the series end says 13 were sent.
        end = frame_pb2.DetectorMessage()
        end.series_end.series_id = sender.series_id
        end.series_end.frames_sent = 13
        sender.send_raw([end.SerializeToString()])
        st = svc.wait_for(lambda s: s.sequence_gaps >= 8, what="trailing gap")
        self.assertEqual(st.sequence_gaps, 8)
        self.assertEqual(svc.metrics()["specwatch_sequence_gaps_total"][""], 3)
        sender.close()

    def test_frames_over_pub_sub(self):
        svc = self.start(frames_socket="sub")
        sender = FrameSender(svc)
        sender.start_series()
        for _ in range(5):
            sender.send_frame(16)
        st = svc.wait_for(lambda s: s.spectra_published >= 80, what="frames over SUB")
        self.assertTrue(st.series_started)
        sender.close()

    def test_per_frame_problems_are_rate_limited_in_the_log(self):
        svc = self.start()
        sender = FrameSender(svc)
        sender.start_series()
        for _ in range(300):
            sender.send_raw([b"junk", b"x"])
        svc.wait_for(lambda s: s.frames_rejected >= 300, what="300 rejections")
        time.sleep(0.2)
        sender.send_raw([b"junk", b"x"])
        svc.wait_for(lambda s: s.frames_rejected >= 301, what="one more")
        lines = [l for l in svc.log().splitlines() if "rejected (header_parse)" in l]
        self.assertLess(len(lines), 30)
        self.assertTrue(any("similar lines suppressed" in l for l in lines), "\n".join(lines))
        sender.close()


if __name__ == "__main__":
    unittest.main()
