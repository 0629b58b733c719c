"""The Prometheus endpoint, scraped over real HTTP: every metric the dashboards use is there, with the
right type, and its values agree with what was sent and with the control socket's status."""

import re
import unittest
import urllib.request

from harness import FrameSender, Service, parse_metrics

EXPECTED = {
    "specwatch_frames_received_total": "counter",
    "specwatch_spectra_received_total": "counter",
    "specwatch_frames_rejected_total": "counter",
    "specwatch_spectra_rejected_total": "counter",
    "specwatch_spectra_published_total": "counter",
    "specwatch_frames_dropped_total": "counter",
    "specwatch_sequence_gaps_total": "counter",
    "specwatch_published_messages_total": "counter",
    "specwatch_series_total": "counter",
    "specwatch_model_spectra_total": "counter",
    "specwatch_model_spectra_skipped_total": "counter",
    "specwatch_model_weight_refreshes_total": "counter",
    "specwatch_frames_in_flight": "gauge",
    "specwatch_model_rank": "gauge",
    "specwatch_model_version": "gauge",
    "specwatch_stage_latency_seconds": "histogram",
    "specwatch_stage_errors_total": "counter",
    "specwatch_stage_cpu_seconds_total": "counter",
    "specwatch_input_lag_seconds": "histogram",
    "specwatch_model_spectra_excluded_total": "counter",
    "specwatch_novelty_spectra_total": "counter",
    "specwatch_novelty_events_total": "counter",
    "specwatch_novelty_calibration_state": "gauge",
    "specwatch_novelty_threshold": "gauge",
    "specwatch_energy_shift_channels": "gauge",
    "specwatch_energy_shift_ev": "gauge",
    "specwatch_subspace_angle_degrees": "gauge",
    "specwatch_drift_events_total": "counter",
    "specwatch_dose_run_e_per_A2": "gauge",
    "specwatch_dose_max_position_e_per_A2": "gauge",
    "specwatch_dose_rate_e_per_A2_per_s": "gauge",
    "specwatch_dose_positions_over_warning": "gauge",
    "specwatch_dose_positions_over_limit": "gauge",
    "specwatch_dose_alarms_total": "counter",
    "specwatch_damage_warnings_total": "counter",
    "specwatch_damage_critical_dose_e_per_A2": "gauge",
    "specwatch_damage_affected_positions": "gauge",
}


class MetricsTest(unittest.TestCase):
    def test_metrics_endpoint(self):
        svc = Service("--rank", "4", config_text="model_updates: \"all\"\npca { block: 16 warmup_spectra: 16 calibration_spectra: 16 auto_rank: false }\n")
        try:
            sender = FrameSender(svc)
            sender.start_series()
            for _ in range(20):
                sender.send_frame(16)
            sender.send_raw([b"junk", b"x"])
            st = svc.wait_for(lambda s: s.spectra_published >= 320 and s.frames_rejected >= 1, what="frames")
            st = svc.wait_for(lambda s: s.spectra_in_model >= 320 and s.frames_in_flight == 0, what="model updates")
            # The first periodic status leaves 0.1 s after start: a fast run gets here before it.
            svc.wait_for(lambda s: any(t.topic == "status" and t.published >= 1 for t in s.published),
                         what="a status published")

            with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % svc.metrics_port, timeout=5) as r:
                self.assertEqual(r.status, 200)
                text = r.read().decode()
            types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
            for name, kind in EXPECTED.items():
                self.assertEqual(types.get(name), kind, name)
            m = parse_metrics(text)
            self.assertEqual(m["specwatch_frames_received_total"][""], 21)
            self.assertEqual(m["specwatch_spectra_received_total"][""], 320)
            self.assertEqual(m["specwatch_spectra_published_total"][""], 320)
            self.assertEqual(m["specwatch_frames_rejected_total"]['{reason="header_parse"}'], 1)
            self.assertEqual(m["specwatch_series_total"][""], 1)
            self.assertEqual(m["specwatch_published_messages_total"]['{topic="denoised"}'], 20)
            self.assertGreaterEqual(m["specwatch_published_messages_total"]['{topic="status"}'], 1)
            self.assertEqual(m["specwatch_model_spectra_total"][""], 320)
            self.assertEqual(m["specwatch_model_rank"][""], 4)
            # 320 spectra: 16 calibrate the weights, which are refreshed after 16, 32, 64, 128 and 256 more
            # were learnt; 20 updates of 16 spectra plus 5 re-expressions.
            self.assertEqual(m["specwatch_model_weight_refreshes_total"][""], 5)
            self.assertEqual(m["specwatch_model_version"][""], 25)
            self.assertEqual(m["specwatch_frames_in_flight"][""], 0)
            self.assertEqual(m["specwatch_frames_dropped_total"][""], 0)
            for stage in ("decode", "score", "session", "learn", "encode", "publish", "end_to_end"):
                count = m["specwatch_stage_latency_seconds_count"]['{stage="%s"}' % stage]
                self.assertGreaterEqual(count, 20, stage)
                self.assertIn('{stage="%s",le="0.001"}' % stage, m["specwatch_stage_latency_seconds_bucket"])
            # Per-stage failures (none here) and CPU time: the stages that did work used some.
            for stage in ("decode", "score", "session", "learn", "encode", "publish"):
                self.assertEqual(m["specwatch_stage_errors_total"]['{stage="%s"}' % stage], 0, stage)
                self.assertGreater(m["specwatch_stage_cpu_seconds_total"]['{stage="%s"}' % stage], 0, stage)
            self.assertEqual(m["specwatch_input_lag_seconds_count"][""], 20)
            # Metrics and control status agree.
            self.assertEqual(st.spectra_received, m["specwatch_spectra_received_total"][""])
            sender.close()
            code, _ = svc.stop()
            self.assertEqual(code, 0)
        finally:
            svc.close()

    def test_metrics_bind_to_loopback_by_default(self):
        from harness import BIN, run
        import os
        r = run([os.path.join(BIN, "specwatch"), "--help"])
        self.assertIn("127.0.0.1:9464", r.stdout)


if __name__ == "__main__":
    unittest.main()
