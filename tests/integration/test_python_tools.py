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
                      config_text='model_updates: "all"\npca { block: 64 warmup_spectra: 512 }\n')
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


if __name__ == "__main__":
    unittest.main()
