"""Every kind of bad input is rejected with a reason counter and a log line naming the frame, the valid
frames around it are processed, and spectra received = published + rejected, exactly."""

import math
import struct
import unittest

import numpy as np

from harness import FrameSender, Service, Subscriber, frame_pb2


class BadInputTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.service = Service(config_text="max_message_bytes: 65536\n")
        cls.sender = FrameSender(cls.service)
        cls.sender.start_series()
        cls.sub = Subscriber(cls.service, topics=(b"denoised",))

    @classmethod
    def tearDownClass(cls):
        cls.sub.close()
        cls.sender.close()
        code, seconds = cls.service.stop()
        cls.service.close()
        assert code == 0, "service exit code %d" % code

    def around(self, reason, send_bad, bad_spectra):
        """good frame, bad message(s), good frame: checks counters, accounting, and that both good frames
        were published."""
        svc = self.service
        before = svc.metrics()
        st0 = svc.status()
        first = self.sender.next_frame
        self.sender.send_frame(16)
        bad_count = send_bad()
        self.sender.send_frame(16)
        last = self.sender.next_frame - 1
        st = svc.wait_for(lambda s: s.frames_received >= st0.frames_received + 2 + bad_count
                          and s.spectra_published >= st0.spectra_published + 32, what=reason)
        after = svc.metrics()
        key = '{reason="%s"}' % reason
        self.assertEqual(after["specwatch_frames_rejected_total"][key]
                         - before["specwatch_frames_rejected_total"][key], bad_count)
        self.assertEqual(after["specwatch_spectra_rejected_total"][key]
                         - before["specwatch_spectra_rejected_total"][key], bad_spectra)
        # Exact accounting, cumulative over the whole run.
        self.assertEqual(st.spectra_received, st.spectra_published + st.spectra_rejected)
        self.assertEqual(st.spectra_published - st0.spectra_published, 32)
        # Both good frames came out denoised.
        got = self.sub.messages(timeout_s=5, until=lambda g: any(
            e.denoised.frame_number == last for _, e, _ in g))
        numbers = [e.denoised.frame_number for _, e, _ in got]
        self.assertIn(first, numbers)
        self.assertIn(last, numbers)
        # The log names the problem (rate-limited, so only the first of a kind is guaranteed).
        self.assertIn("rejected (%s)" % reason, svc.log())
        self.assertIsNone(svc.proc.poll(), "service must keep running")

    def test_wrong_number_of_parts(self):
        def bad():
            h = self.sender.header(16)
            self.sender.send_raw([h.SerializeToString()])  # frame without payload
            self.sender.send_raw([h.SerializeToString(), b"\0" * 4096, b"extra"])
            return 2
        self.around("part_count", bad, 32)

    def test_unparsable_header(self):
        def bad():
            self.sender.send_raw([b"\xff\xfe not protobuf", b"\0" * 4096])
            return 1
        self.around("header_parse", bad, 0)

    def test_channel_count_mismatch(self):
        def bad():
            h = self.sender.header(16, channels=100)
            self.sender.send_raw([h.SerializeToString(), b"\0" * (16 * 100 * 2)])
            return 1
        self.around("channel_mismatch", bad, 16)

    def test_payload_size_mismatch(self):
        def bad():
            h = self.sender.header(16)
            self.sender.send_raw([h.SerializeToString(), b"\0" * (16 * 128 * 2 - 2)])
            return 1
        self.around("payload_size", bad, 16)

    def test_unknown_payload_type(self):
        def bad():
            h = self.sender.header(16, payload_type=7)
            self.sender.send_raw([h.SerializeToString(), b"\0" * (16 * 128 * 2)])
            return 1
        self.around("payload_type", bad, 16)

    def test_nan_inf_negative_in_float_payload(self):
        def bad():
            for value in (math.nan, math.inf, -3.0):
                h = self.sender.header(16, payload_type=frame_pb2.PAYLOAD_FLOAT32)
                x = np.ones((16, 128), dtype="<f4")
                x[3, 7] = value
                self.sender.send_raw([h.SerializeToString(), x.tobytes()])
            return 3
        self.around("bad_value", bad, 48)

    def test_duplicate_frame_number(self):
        def bad():
            dup = self.sender.next_frame - 1
            self.sender.send_frame(16, frame_number=dup)
            self.sender.next_frame = dup + 1
            return 1
        self.around("duplicate_frame", bad, 16)

    def test_out_of_order_frame_number(self):
        def bad():
            n = self.sender.next_frame
            self.sender.send_frame(16, frame_number=n - 3)
            self.sender.next_frame = n
            return 1
        self.around("out_of_order", bad, 16)

    def test_message_over_size_limit(self):
        def bad():
            h = self.sender.header(300)
            self.sender.send_raw([h.SerializeToString(), b"\0" * (300 * 128 * 2)])
            return 1
        self.around("too_large", bad, 300)


if __name__ == "__main__":
    unittest.main()
