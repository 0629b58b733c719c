"""Integration-test harness: starts the real specwatch processes on free loopback ports and talks to them
over real ZeroMQ sockets and the real Prometheus endpoint.

Environment (set by CTest): SPECWATCH_BIN (build/bin), SPECWATCH_PYTHON_PROTO (build/python).
"""

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import numpy as np
import zmq

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
BIN = os.environ.get("SPECWATCH_BIN", os.path.join(ROOT, "build", "bin"))
sys.path.insert(0, os.environ.get("SPECWATCH_PYTHON_PROTO", os.path.join(ROOT, "build", "python")))
sys.path.insert(0, os.path.join(ROOT, "tools", "python"))

import control_pb2  # noqa: E402
import frame_pb2  # noqa: E402
import results_pb2  # noqa: E402


def free_ports(n):
    """n distinct TCP ports on 127.0.0.1 that were free a moment ago (the kernel picks them; all are held
    until all are picked, so no two are the same)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def parse_metrics(text):
    """Prometheus text format -> {name: {labels_string: value}} (labels_string '' when none)."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)', line)
        if m:
            out.setdefault(m.group(1), {})[m.group(2) or ""] = float(m.group(3))
    return out


class PortTaken(Exception):
    pass


class Service:
    """A running `specwatch` on free ports. Frames come in over PUSH/PULL by default: the service binds
    a PULL socket, the test pushes (no slow-joiner losses); `frames_socket='sub'` makes the service connect
    a SUB socket to a PUB the test binds."""

    def __init__(self, *extra_args, config_text=None, frames_socket="pull", status_period_s=0.1):
        # A port picked free may be taken by another process before the service binds it: try again then.
        for attempt in range(5):
            try:
                self._start(extra_args, config_text, frames_socket, status_period_s)
                return
            except PortTaken:
                self.close()
        raise RuntimeError("could not find free ports for specwatch")

    def _start(self, extra_args, config_text, frames_socket, status_period_s):
        self.frames_port, self.publish_port, self.control_port, self.metrics_port = free_ports(4)
        self.frames_socket = frames_socket
        self.ctx = zmq.Context.instance()
        self.config_path = None
        conf = "status_period_s: %g\nlog_rate_limit_per_s: 20\n" % status_period_s
        if config_text:
            conf += config_text
        fd, self.config_path = tempfile.mkstemp(suffix=".conf")
        with os.fdopen(fd, "w") as f:
            f.write(conf)
        if frames_socket == "pull":
            frames = "@tcp://127.0.0.1:%d" % self.frames_port
        else:
            frames = ">tcp://127.0.0.1:%d" % self.frames_port
        self.args = [os.path.join(BIN, "specwatch"), "--config", self.config_path,
                     "--frames", frames, "--frames-socket", frames_socket,
                     "--publish", "@tcp://127.0.0.1:%d" % self.publish_port,
                     "--control", "@tcp://127.0.0.1:%d" % self.control_port,
                     "--metrics", "127.0.0.1:%d" % self.metrics_port] + list(extra_args)
        self.log_file = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(self.args, stdout=self.log_file, stderr=subprocess.STDOUT)
        self._wait_ready()

    @property
    def frames_endpoint(self):
        return "tcp://127.0.0.1:%d" % self.frames_port

    @property
    def publish_endpoint(self):
        return "tcp://127.0.0.1:%d" % self.publish_port

    def _wait_ready(self, timeout_s=10.0):
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if self.proc.poll() is not None:
                if "Address already in use" in self.log():
                    raise PortTaken()
                raise RuntimeError("specwatch exited %d at start:\n%s" % (self.proc.returncode, self.log()))
            try:
                self.control(control_pb2.COMMAND_STATUS, timeout_s=0.5)
                return
            except TimeoutError:
                pass
        raise RuntimeError("specwatch did not answer on its control socket:\n" + self.log())

    def control(self, command, timeout_s=5.0):
        req = self.ctx.socket(zmq.REQ)
        req.setsockopt(zmq.LINGER, 0)
        req.connect("tcp://127.0.0.1:%d" % self.control_port)
        try:
            req.send(control_pb2.ControlRequest(command=command).SerializeToString())
            if not req.poll(int(timeout_s * 1000)):
                raise TimeoutError("no control reply")
            reply = control_pb2.ControlReply()
            reply.ParseFromString(req.recv())
            return reply
        finally:
            req.close()

    def status(self):
        return self.control(control_pb2.COMMAND_STATUS).status

    def metrics(self):
        url = "http://127.0.0.1:%d/metrics" % self.metrics_port
        with urllib.request.urlopen(url, timeout=5) as r:
            return parse_metrics(r.read().decode())

    def wait_for(self, predicate, timeout_s=10.0, what="condition"):
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            st = self.status()
            if predicate(st):
                return st
            time.sleep(0.02)
        raise AssertionError("timed out waiting for %s; last status:\n%s\nlog:\n%s" % (what, st, self.log()))

    def log(self):
        self.log_file.flush()
        self.log_file.seek(0)
        return self.log_file.read()

    def stop(self, sig=signal.SIGTERM, timeout_s=2.0):
        """Signals the service and returns (exit code, seconds it took)."""
        t0 = time.time()
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=timeout_s + 3)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        return code, time.time() - t0

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log_file.close()
        if self.config_path and os.path.exists(self.config_path):
            os.remove(self.config_path)


class FrameSender:
    """Detector side for tests: a PUSH (service pulls) or PUB (service subscribes) socket that can send
    well-formed and deliberately malformed messages."""

    def __init__(self, service, series_id="series-1", channels=128, width=16, height=4):
        self.ctx = zmq.Context.instance()
        if service.frames_socket == "pull":
            self.sock = self.ctx.socket(zmq.PUSH)
            self.sock.connect(service.frames_endpoint)
        else:
            self.sock = self.ctx.socket(zmq.PUB)
            self.sock.bind(service.frames_endpoint)
            time.sleep(0.5)  # let the service's SUB join
        self.sock.setsockopt(zmq.LINGER, 2000)
        self.series_id, self.channels, self.width, self.height = series_id, channels, width, height
        self.next_frame = 0
        self.rng = np.random.default_rng(12345)
        self.components = np.abs(self.rng.normal(size=(3, channels))) * 30.0

    def start_series(self, series_id=None):
        if series_id:
            self.series_id = series_id
        m = frame_pb2.DetectorMessage()
        s = m.series_start
        s.series_id = self.series_id
        s.modality = frame_pb2.MODALITY_EDS
        s.channel_count = self.channels
        s.payload_type = frame_pb2.PAYLOAD_UINT16
        s.energy_axis.offset, s.energy_axis.dispersion, s.energy_axis.unit = 0.0, 0.01, "keV"
        s.scan_shape.width, s.scan_shape.height = self.width, self.height
        s.defaults.dwell_s, s.defaults.beam_current_pA, s.defaults.pixel_area_A2 = 1e-3, 100.0, 4.0
        self.sock.send(m.SerializeToString())
        self.next_frame = 0

    def end_series(self):
        m = frame_pb2.DetectorMessage()
        m.series_end.series_id = self.series_id
        self.sock.send(m.SerializeToString())

    def spectra(self, n):
        ab = self.rng.dirichlet([1.0, 1.0, 1.0], size=n)
        return self.rng.poisson(ab @ self.components)

    def header(self, n, frame_number=None, payload_type=frame_pb2.PAYLOAD_UINT16, channels=None):
        m = frame_pb2.DetectorMessage()
        h = m.frame
        h.series_id = self.series_id
        h.frame_number = self.next_frame if frame_number is None else frame_number
        h.acquisition_time_s = time.time()
        h.channel_count = self.channels if channels is None else channels
        h.spectrum_count = n
        h.payload_type = payload_type
        h.start_index = h.frame_number * n
        return m

    def send_frame(self, n=16, frame_number=None, payload=None, header=None):
        """A good frame unless told otherwise; advances the frame number."""
        m = header if header is not None else self.header(n, frame_number)
        if payload is None:
            payload = self.spectra(n).astype("<u2").tobytes()
        self.sock.send_multipart([m.SerializeToString(), payload])
        self.next_frame = m.frame.frame_number + 1
        return n

    def send_raw(self, parts):
        self.sock.send_multipart(parts)

    def close(self):
        self.sock.close()


class Subscriber:
    """SUB to the service's publish socket; waits until the subscription is live (a status arrives)."""

    def __init__(self, service, topics=(b"",)):
        self.sock = zmq.Context.instance().socket(zmq.SUB)
        for t in topics:
            self.sock.setsockopt(zmq.SUBSCRIBE, t)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"status")
        self.sock.connect(service.publish_endpoint)
        deadline = time.time() + 10
        while time.time() < deadline:
            if self.sock.poll(100):
                parts = self.sock.recv_multipart()
                if parts[0] == b"status":
                    return
        raise RuntimeError("no status message from the service")

    def messages(self, timeout_s=2.0, until=None, skip_status=True):
        """Collects (topic, envelope, payload bytes) until `until(list)` is true or the timeout passes."""
        got = []
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if not self.sock.poll(50):
                continue
            parts = self.sock.recv_multipart()
            topic = parts[0].decode()
            if skip_status and topic == "status":
                continue
            env = results_pb2.Envelope()
            env.ParseFromString(parts[1])
            got.append((topic, env, parts[2] if len(parts) > 2 else b""))
            if until and until(got):
                break
        return got

    def close(self):
        self.sock.close()


def run(cmd, timeout=30):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
