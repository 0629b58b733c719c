#!/usr/bin/python3
"""Python client for specwatch: the wire contract of proto/README.md, in one importable module.

Dependencies: Debian's python3-zmq, python3-protobuf and python3-numpy only (run with /usr/bin/python3).

    load_protos()      the generated *_pb2 modules (build/python, or protoc into a temp dir)
    FramePublisher     detector side: SeriesStart, frames (header + raw payload), SeriesEnd on a PUB or PUSH socket
    EventSubscriber    client side: subscribe to result topics, decoded events with numpy payloads,
                       gap (missing sequence numbers) and restart (publisher_epoch change) detection per topic
    ControlClient      REQ socket to the control endpoint: one command, one reply, with a timeout

Helpers a mock service or a test can use: decode_frame() (the acceptance rules of the frame contract),
encode_result() (build a published message), parse_endpoints() / attach() ("@" bind, ">" connect).

Threading: like the ZeroMQ sockets they wrap, FramePublisher, EventSubscriber and ControlClient are for one
thread each. Several may share a zmq.Context.
"""

from __future__ import annotations

import atexit
import collections
import dataclasses
import importlib
import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import types
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import zmq

__all__ = [
    "advice_codes",
    "DEFAULT_FRAMES_ENDPOINT", "DEFAULT_PUBLISH_ENDPOINT", "DEFAULT_CONTROL_ENDPOINT", "TOPICS",
    "RESERVED_TOPICS", "REJECT_REASONS", "PAYLOAD_TYPES", "SpecwatchError", "ProtocolError", "FrameRejected",
    "SendTimeout", "ControlTimeout", "ControlError", "load_protos", "parse_endpoints", "attach", "FramePublisher",
    "EventSubscriber", "Event", "TopicStats", "ControlClient", "DecodedFrame", "decode_frame", "encode_result",
    "raster_positions", "synthetic_spectrum_image", "read_recording", "load_snapshot_file",
]

log = logging.getLogger("specwatch_client")

# Where the detector (or simulator) binds its frame socket and where a client connects to the service.
# The service itself connects to frames and binds publish/control (see proto/README.md).
DEFAULT_FRAMES_ENDPOINT = "@tcp://127.0.0.1:5555"     # FramePublisher: bind
DEFAULT_PUBLISH_ENDPOINT = ">tcp://127.0.0.1:5556"    # EventSubscriber: connect
DEFAULT_CONTROL_ENDPOINT = ">tcp://127.0.0.1:5557"    # ControlClient: connect

TOPICS = ("denoised", "snapshot", "status", "model", "residual_map", "novelty", "drift", "dose", "advice", "damage")
RESERVED_TOPICS = ()

# Label values of specwatch_frames_rejected_total{reason} and specwatch_spectra_rejected_total{reason}
# (stream/frame_decoder.cpp ReasonLabel), in the order the service checks them.
REJECT_REASONS = {
    "too_large": "message larger than max_message_bytes (all parts together)",
    "part_count": "not 1 or 2 parts; a frame without payload part; a series start/end with 2",
    "header_parse": "part 1 is not a DetectorMessage, or has no body, an empty series_id, zero spectrum or "
                    "channel count, an unknown modality or an energy-axis dispersion <= 0",
    "payload_type": "payload_type PAYLOAD_UNSPECIFIED or unknown",
    "channel_mismatch": "channel_count differs from the current series'",
    "payload_size": "payload bytes != spectrum_count * channel_count * element size",
    "bad_positions": "explicit positions given, but not one per spectrum",
    "duplicate_frame": "frame_number equal to the last accepted one of the series",
    "out_of_order": "frame_number lower than the last accepted one of the series",
    "bad_value": "NaN, infinity or a negative value in a float32 payload",
}

# name -> (PayloadType value, numpy dtype on the wire)
PAYLOAD_TYPES = {
    "uint16": (1, np.dtype("<u2")),
    "uint32": (2, np.dtype("<u4")),
    "float32": (3, np.dtype("<f4")),
}
_PAYLOAD_BY_VALUE = {v: (name, dt) for name, (v, dt) in PAYLOAD_TYPES.items()}

MODALITIES = {"other": 0, "eels": 1, "eds": 2, "xrd": 3, "raman": 4}

_PROTO_FILES = ("frame", "results", "control", "config")
_HERE = os.path.dirname(os.path.abspath(__file__))
_REPO = os.path.dirname(os.path.dirname(_HERE))


class SpecwatchError(Exception):
    """Base of the errors this module raises."""


class ProtocolError(SpecwatchError):
    """A message that does not follow the wire contract."""


class FrameRejected(ProtocolError):
    """decode_frame() refused a detector message; `reason` is one of REJECT_REASONS."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class SendTimeout(SpecwatchError, TimeoutError):
    """FramePublisher: the message could not be queued within send_timeout_s (PUSH without a receiver, or
    with a full queue). Nothing of the message was sent."""


class ControlTimeout(SpecwatchError, TimeoutError):
    """No reply on the control socket within the timeout (service down, busy, or wrong endpoint)."""


class ControlError(SpecwatchError):
    """The service answered ok = false."""

    def __init__(self, reply):
        super().__init__(reply.message or "command refused")
        self.reply = reply


# --------------------------------------------------------------------------------------------------------------
# Generated modules
# --------------------------------------------------------------------------------------------------------------

_protos: Optional[types.SimpleNamespace] = None
_protos_lock = threading.Lock()


def _has_all_modules(directory: str) -> bool:
    return all(os.path.isfile(os.path.join(directory, f"{p}_pb2.py")) for p in _PROTO_FILES)


def _is_stale(python_dir: str, proto_dir: str) -> bool:
    """True when a schema in proto_dir is newer than the module generated from it."""
    for p in _PROTO_FILES:
        src = os.path.join(proto_dir, f"{p}.proto")
        gen = os.path.join(python_dir, f"{p}_pb2.py")
        if os.path.isfile(src) and os.path.getmtime(src) > os.path.getmtime(gen):
            return True
    return False


def _run_protoc(proto_dir: str) -> str:
    protoc = shutil.which("protoc")
    if protoc is None:
        raise SpecwatchError("generated protobuf modules not found and protoc is not installed "
                             "(build the project, set SPECWATCH_PYTHON_PROTO, or install protobuf-compiler)")
    out = tempfile.mkdtemp(prefix="specwatch_proto_")
    atexit.register(shutil.rmtree, out, True)
    protos = [os.path.join(proto_dir, f"{p}.proto") for p in _PROTO_FILES]
    result = subprocess.run([protoc, f"--proto_path={proto_dir}", f"--python_out={out}", *protos],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise SpecwatchError(f"protoc failed on {proto_dir}: {result.stderr.strip()}")
    return out


def load_protos(python_dir: Optional[str] = None, proto_dir: Optional[str] = None) -> types.SimpleNamespace:
    """Imports the generated modules once and returns them as a namespace: .frame, .results, .control, .config.

    Looks in `python_dir`, else $SPECWATCH_PYTHON_PROTO, else <repo>/build/python (what CMake generates). When
    the modules are not there, or older than the schemas, runs `protoc --python_out` into a temporary directory
    from `proto_dir` (else $SPECWATCH_PROTO_DIR, else <repo>/proto). The directory used is put on sys.path (the
    generated results_pb2 imports frame_pb2 by its top-level name) and reported as .python_dir.
    """
    global _protos
    with _protos_lock:
        if _protos is not None:
            return _protos
        proto_dir = proto_dir or os.environ.get("SPECWATCH_PROTO_DIR") or os.path.join(_REPO, "proto")
        candidates = [python_dir] if python_dir else []
        if os.environ.get("SPECWATCH_PYTHON_PROTO"):
            candidates.append(os.environ["SPECWATCH_PYTHON_PROTO"])
        candidates.append(os.path.join(_REPO, "build", "python"))
        chosen = None
        for c in candidates:
            if c and _has_all_modules(c):
                if _is_stale(c, proto_dir):
                    log.warning("%s is older than the schemas in %s; regenerating into a temp dir", c, proto_dir)
                    continue
                chosen = c
                break
        if chosen is None:
            chosen = _run_protoc(proto_dir)
        chosen = os.path.abspath(chosen)
        if chosen not in sys.path:
            sys.path.insert(0, chosen)
        mods = {p: importlib.import_module(f"{p}_pb2") for p in _PROTO_FILES}
        _protos = types.SimpleNamespace(python_dir=chosen, **mods)
        return _protos


# --------------------------------------------------------------------------------------------------------------
# Endpoints
# --------------------------------------------------------------------------------------------------------------

def parse_endpoints(text: str, default_direction: str) -> List[Tuple[str, str]]:
    """Parses "@addr" (bind), ">addr" (connect) or "addr" (default_direction), comma-separated.

    Returns [(direction, address)] with direction "bind" or "connect".
    """
    if default_direction not in ("bind", "connect"):
        raise ValueError(f"default_direction must be 'bind' or 'connect', not {default_direction!r}")
    out = []
    for item in text.split(","):
        item = item.strip()
        direction = default_direction
        if item.startswith("@"):
            direction, item = "bind", item[1:]
        elif item.startswith(">"):
            direction, item = "connect", item[1:]
        if "://" not in item or item.startswith("://"):
            raise ValueError(f"{text!r} is not an endpoint (expected e.g. tcp://127.0.0.1:5555, "
                             "prefixed @ to bind or > to connect)")
        out.append((direction, item))
    return out


def attach(socket: zmq.Socket, text: str, default_direction: str) -> List[str]:
    """Binds or connects `socket` to every endpoint in `text`; returns the addresses bound (with the port a
    "tcp://127.0.0.1:*" wildcard resolved to) or connected."""
    attached = []
    for direction, address in parse_endpoints(text, default_direction):
        if direction == "bind":
            socket.bind(address)
            attached.append(socket.getsockopt_string(zmq.LAST_ENDPOINT))
        else:
            socket.connect(address)
            attached.append(address)
    return attached


# --------------------------------------------------------------------------------------------------------------
# Small conversions
# --------------------------------------------------------------------------------------------------------------

def _payload_type(value: Any) -> Tuple[int, np.dtype]:
    """'uint16' | numpy dtype | PayloadType value -> (PayloadType value, wire dtype)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        if int(value) in _PAYLOAD_BY_VALUE:
            return int(value), _PAYLOAD_BY_VALUE[int(value)][1]
        raise ValueError(f"unknown PayloadType value {value}")
    name = value if isinstance(value, str) else np.dtype(value).name
    name = name.lower().removeprefix("payload_")
    if name not in PAYLOAD_TYPES:
        raise ValueError(f"payload type must be one of {sorted(PAYLOAD_TYPES)}, not {value!r}")
    return PAYLOAD_TYPES[name]


def _modality(value: Any) -> int:
    if isinstance(value, (int, np.integer)):
        return int(value)
    name = str(value).lower().removeprefix("modality_")
    if name not in MODALITIES:
        raise ValueError(f"modality must be one of {sorted(MODALITIES)}, not {value!r}")
    return MODALITIES[name]


def _fill_energy_axis(msg, axis) -> None:
    """axis: (offset, dispersion, unit) | {"offset", "dispersion", "unit"} | EnergyAxis message."""
    if hasattr(axis, "DESCRIPTOR"):
        msg.CopyFrom(axis)
        return
    if isinstance(axis, dict):
        offset, dispersion, unit = axis.get("offset", 0.0), axis.get("dispersion", 1.0), axis.get("unit", "")
    else:
        offset, dispersion, unit = axis
    if not dispersion > 0:
        raise ValueError(f"energy axis dispersion must be > 0, not {dispersion}")
    msg.offset, msg.dispersion, msg.unit = float(offset), float(dispersion), str(unit)


def _scan_shape(shape) -> Tuple[int, int]:
    """(width, height) | ScanShape message -> (width, height)."""
    if hasattr(shape, "DESCRIPTOR"):
        return int(shape.width), int(shape.height)
    width, height = shape
    return int(width), int(height)


def raster_positions(start_index: int, count: int, width: int, height: int) -> np.ndarray:
    """(count, 3) uint64 array of (x, y, pass) for raster indices start_index ... start_index + count - 1:
    index = pass * width * height + y * width + x."""
    if width <= 0 or height <= 0:
        raise ValueError("raster positions need a known scan shape (width, height > 0)")
    index = np.arange(start_index, start_index + count, dtype=np.uint64)
    per_pass = np.uint64(width * height)
    within = index % per_pass
    return np.stack([within % np.uint64(width), within // np.uint64(width), index // per_pass], axis=1)


def _to_wire(spectra: np.ndarray, dtype: np.dtype, validate: bool) -> np.ndarray:
    """Converts to the wire dtype, refusing (when validate) what would change a value or what the service rejects."""
    if not validate:
        return np.ascontiguousarray(spectra).astype(dtype, copy=False, casting="unsafe")
    if dtype.kind == "u":
        info = np.iinfo(dtype)
        if spectra.dtype.kind == "f":
            if not np.all(np.isfinite(spectra)) or np.any(spectra != np.round(spectra)):
                raise ValueError(f"spectra must hold whole numbers for a {dtype.name} payload")
        elif spectra.dtype.kind not in "ui":
            raise ValueError(f"cannot send {spectra.dtype} spectra as {dtype.name}")
        if spectra.size and (spectra.min() < 0 or spectra.max() > info.max):
            raise ValueError(f"spectra values outside [0, {info.max}] do not fit a {dtype.name} payload")
    else:
        with np.errstate(over="ignore"):
            converted = spectra.astype(dtype)
        if not np.all(np.isfinite(converted)):
            raise ValueError("spectra hold NaN or infinity (or values beyond float32): the service rejects them")
        if converted.size and converted.min() < 0:
            raise ValueError("spectra hold negative values: the service rejects them")
        return np.ascontiguousarray(converted)
    return np.ascontiguousarray(spectra, dtype=dtype)


# --------------------------------------------------------------------------------------------------------------
# Detector side
# --------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class _Series:
    series_id: str
    channel_count: int
    payload_type: int
    modality: int
    energy_axis: Any = None       # EnergyAxis message or None
    scan_shape: Tuple[int, int] = (0, 0)
    dwell_s: float = 0.0
    beam_current_pA: float = 0.0
    pixel_area_A2: float = 0.0
    next_frame_number: int = 0
    next_index: int = 0
    frames_sent: int = 0
    spectra_sent: int = 0


class FramePublisher:
    """Sends the detector side of the frame contract: what an instrument script, a replay or a test uses.

    The detector binds (default "@tcp://127.0.0.1:5555"); the service connects and subscribes (SUB) or pulls
    (PULL). socket_type "pub" uses an XPUB socket (a PUB that also sees subscriptions, so that
    wait_for_subscribers() can avoid losing the first messages to ZeroMQ's slow-joiner effect); "push" blocks
    when the receiver's queue is full instead of dropping.

    By default frames are self-contained: each header repeats the series' energy axis, scan shape and
    acquisition defaults, so a service that joins late (missed the SeriesStart) still has everything.
    With validate=True (default) values the service would reject, or that would not survive the conversion to
    the payload type, raise ValueError here; validate=False sends whatever it is given (for testing rejections).
    Call close() (or use `with`) before exiting: it waits up to linger_s for queued frames to be sent.
    send_timeout_s: None blocks while a PUSH socket has no receiver or a full queue (ZeroMQ's behaviour);
    a number raises SendTimeout instead. A PUB socket never blocks: it drops. One thread only.
    """

    def __init__(self, endpoint: str = DEFAULT_FRAMES_ENDPOINT, socket_type: str = "pub", *,
                 context: Optional[zmq.Context] = None, send_hwm: int = 1000, linger_s: float = 5.0,
                 send_timeout_s: Optional[float] = None, validate: bool = True, self_contained: bool = True,
                 protos=None):
        self._pb = protos or load_protos()
        socket_type = socket_type.lower()
        if socket_type not in ("pub", "push"):
            raise ValueError(f"socket_type must be 'pub' or 'push', not {socket_type!r}")
        self.socket_type = socket_type
        # An own context unless given one: close() then terminates it, which is what waits (up to linger_s)
        # for queued frames to leave; a process exiting without that loses them.
        self._own_context = context is None
        self._context = context or zmq.Context()
        self._socket = self._context.socket(zmq.XPUB if socket_type == "pub" else zmq.PUSH)
        self._socket.setsockopt(zmq.SNDHWM, send_hwm)
        self._socket.setsockopt(zmq.LINGER, int(linger_s * 1000))
        self._socket.setsockopt(zmq.SNDTIMEO, -1 if send_timeout_s is None else int(send_timeout_s * 1000))
        self.endpoints = attach(self._socket, endpoint, "bind")
        self.validate = validate
        self.self_contained = self_contained
        self._series: Optional[_Series] = None
        self._subscribers = 0

    # -- lifecycle ------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Closes the socket; with the publisher's own context, waits up to linger_s for queued frames."""
        self._socket.close()
        if self._own_context:
            self._context.term()
            self._own_context = False

    def __enter__(self) -> "FramePublisher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def socket(self) -> zmq.Socket:
        return self._socket

    @property
    def series_id(self) -> Optional[str]:
        return self._series.series_id if self._series else None

    @property
    def frames_sent(self) -> int:
        return self._series.frames_sent if self._series else 0

    @property
    def spectra_sent(self) -> int:
        return self._series.spectra_sent if self._series else 0

    def wait_for_subscribers(self, timeout_s: float = 10.0, count: int = 1) -> bool:
        """PUB only: waits until `count` subscriptions arrived (True) or the timeout passed (False).
        A PUB socket drops what it sends before a subscriber has connected. PUSH: waits for nothing, True."""
        if self.socket_type != "pub":
            return True
        deadline = time.monotonic() + timeout_s
        while self._subscribers < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._socket.poll(int(remaining * 1000) + 1, zmq.POLLIN):
                return self._subscribers >= count
            self._drain_subscriptions()
        return True

    def _drain_subscriptions(self) -> None:
        while True:
            try:
                msg = self._socket.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if msg[:1] == b"\x01":
                self._subscribers += 1
            elif msg[:1] == b"\x00":
                self._subscribers = max(0, self._subscribers - 1)

    # -- messages -------------------------------------------------------------------------------------------
    def send_raw(self, parts: Sequence[bytes]) -> None:
        """Sends arbitrary message parts (fault injection: wrong part counts, corrupt headers ...)."""
        if self.socket_type == "pub":
            self._drain_subscriptions()
        try:
            self._socket.send_multipart(list(parts))   # atomic: all parts are queued, or none
        except zmq.Again:
            raise SendTimeout(f"could not send within {self._socket.getsockopt(zmq.SNDTIMEO)} ms "
                              f"(no receiver on {', '.join(self.endpoints)}?)") from None

    def start_series(self, series_id: Optional[str] = None, *, channel_count: int, payload_type: Any = "uint32",
                     modality: Any = "other", energy_axis: Any = None, scan_shape: Any = None,
                     dwell_s: float = 0.0, beam_current_pA: float = 0.0, pixel_area_A2: float = 0.0,
                     passes: int = 0, start_time_s: Optional[float] = None):
        """Sends a SeriesStart and makes it the current series (frame numbers restart at 0). Returns the message.

        series_id: default a time-based id. energy_axis: (offset, dispersion, unit) e.g. (0.16, 0.02, "keV").
        scan_shape: (width, height). dwell_s [s], beam_current_pA [pA], pixel_area_A2 [Å²]: the defaults of
        every spectrum of the series. passes: planned passes over the scan (0 = unknown)."""
        pb = self._pb.frame
        ptype, _ = _payload_type(payload_type)
        if channel_count <= 0:
            raise ValueError("channel_count must be > 0")
        series_id = series_id or time.strftime("series-%Y%m%dT%H%M%S") + f"-{os.getpid()}"
        start = pb.SeriesStart(series_id=series_id, modality=_modality(modality), channel_count=channel_count,
                               payload_type=ptype, passes=passes,
                               start_time_s=time.time() if start_time_s is None else start_time_s)
        axis = None
        if energy_axis is not None:
            _fill_energy_axis(start.energy_axis, energy_axis)
            axis = start.energy_axis
        shape = (0, 0)
        if scan_shape is not None:
            shape = _scan_shape(scan_shape)
            start.scan_shape.width, start.scan_shape.height = shape
        start.defaults.dwell_s, start.defaults.beam_current_pA, start.defaults.pixel_area_A2 = (
            dwell_s, beam_current_pA, pixel_area_A2)
        self._series = _Series(series_id, channel_count, ptype, start.modality, axis, shape, dwell_s,
                               beam_current_pA, pixel_area_A2)
        self.send_raw([pb.DetectorMessage(series_start=start).SerializeToString()])
        return start

    def end_series(self, *, frames_sent: Optional[int] = None, spectra_sent: Optional[int] = None):
        """Sends a SeriesEnd for the current series (counts default to what this publisher sent) and forgets
        the series. Returns the message."""
        if self._series is None:
            raise SpecwatchError("end_series() without a current series")
        s = self._series
        end = self._pb.frame.SeriesEnd(series_id=s.series_id,
                                       frames_sent=s.frames_sent if frames_sent is None else frames_sent,
                                       spectra_sent=s.spectra_sent if spectra_sent is None else spectra_sent)
        self.send_raw([self._pb.frame.DetectorMessage(series_end=end).SerializeToString()])
        self._series = None
        return end

    def send_frame(self, spectra: np.ndarray, frame_number: Optional[int] = None, *,
                   positions: Optional[Any] = None, start_index: Optional[int] = None,
                   energy_axis: Any = None, dwell_s: float = 0.0, beam_current_pA: float = 0.0,
                   pixel_area_A2: float = 0.0, payload_type: Any = None, acquisition_time_s: Optional[float] = None,
                   series_id: Optional[str] = None, modality: Any = None, scan_shape: Any = None):
        """Sends one frame [DetectorMessage{frame}][payload]; returns the FrameHeader sent.

        spectra: [spectrum_count, channel_count] (a 1-D array is one spectrum), any numeric dtype; converted to
            the payload type (default: the series', else from the array's dtype), little-endian, C order.
        frame_number: default the next one of the series (0, 1, 2 ...).
        positions: explicit (x, y) per spectrum, array-like [spectrum_count, 2]; or
        start_index: raster index of the first spectrum, pass*W*H + y*W + x. Neither: continue the raster
            after the last spectrum sent in this series.
        energy_axis, dwell_s [s], beam_current_pA [pA], pixel_area_A2 [Å²]: per-frame values; None / 0 means
            the series default.
        Without start_series() the first frame starts an implicit series (no SeriesStart is sent): give
        series_id (default a time-based id), modality and scan_shape here.
        """
        pb = self._pb.frame
        spectra = np.asarray(spectra)
        if spectra.ndim == 1:
            spectra = spectra.reshape(1, -1)
        if spectra.ndim != 2:
            raise ValueError(f"spectra must be [spectrum_count, channel_count], got shape {spectra.shape}")
        n, channels = spectra.shape
        if self._series is None or (series_id is not None and series_id != self._series.series_id):
            ptype = _payload_type(payload_type if payload_type is not None else spectra.dtype)[0]
            self._series = _Series(series_id or time.strftime("series-%Y%m%dT%H%M%S") + f"-{os.getpid()}",
                                   channels, ptype, _modality(modality if modality is not None else "other"))
            if scan_shape is not None:
                self._series.scan_shape = _scan_shape(scan_shape)
            if energy_axis is not None:   # the first frame's values become the implicit series' defaults
                self._series.energy_axis = pb.EnergyAxis()
                _fill_energy_axis(self._series.energy_axis, energy_axis)
            self._series.dwell_s, self._series.beam_current_pA, self._series.pixel_area_A2 = (
                dwell_s, beam_current_pA, pixel_area_A2)
        s = self._series
        if self.validate:
            if n == 0 or channels == 0:
                raise ValueError("a frame needs at least one spectrum and one channel")
            if channels != s.channel_count:
                raise ValueError(f"spectra have {channels} channels, the series {s.channel_count}")
        ptype, dtype = _payload_type(payload_type if payload_type is not None else s.payload_type)
        payload = _to_wire(spectra, dtype, self.validate)

        header = pb.FrameHeader(series_id=s.series_id,
                                frame_number=s.next_frame_number if frame_number is None else frame_number,
                                acquisition_time_s=time.time() if acquisition_time_s is None else acquisition_time_s,
                                modality=s.modality if modality is None else _modality(modality),
                                channel_count=channels, spectrum_count=n, payload_type=ptype)
        if energy_axis is not None:
            _fill_energy_axis(header.energy_axis, energy_axis)
        elif self.self_contained and s.energy_axis is not None:
            header.energy_axis.CopyFrom(s.energy_axis)
        acq = (dwell_s or (s.dwell_s if self.self_contained else 0.0),
               beam_current_pA or (s.beam_current_pA if self.self_contained else 0.0),
               pixel_area_A2 or (s.pixel_area_A2 if self.self_contained else 0.0))
        if any(acq):
            header.acquisition.dwell_s, header.acquisition.beam_current_pA, header.acquisition.pixel_area_A2 = acq
        shape = _scan_shape(scan_shape) if scan_shape is not None else s.scan_shape
        if scan_shape is not None or (self.self_contained and shape != (0, 0)):
            header.scan_shape.width, header.scan_shape.height = shape

        if positions is not None and start_index is not None:
            raise ValueError("give positions or start_index, not both")
        if positions is not None:
            pos = np.asarray(positions, dtype=np.int64).reshape(-1, 2)
            if self.validate:
                if len(pos) != n:
                    raise ValueError(f"{len(pos)} positions for {n} spectra")
                if pos.size and pos.min() < 0:
                    raise ValueError("negative scan position")
                if shape != (0, 0) and (np.any(pos[:, 0] >= shape[0]) or np.any(pos[:, 1] >= shape[1])):
                    raise ValueError(f"scan position outside the scan shape {shape[0]}x{shape[1]}")
            for x, y in pos:
                header.positions.add(x=int(x), y=int(y))
            next_index = s.next_index + n
        else:
            if start_index is None:
                start_index = s.next_index
            if start_index < 0:
                raise ValueError("start_index must be >= 0")
            header.start_index = start_index
            next_index = start_index + n

        self.send_raw([pb.DetectorMessage(frame=header).SerializeToString(), payload.tobytes()])
        s.next_frame_number = header.frame_number + 1
        s.next_index = next_index
        s.frames_sent += 1
        s.spectra_sent += n
        return header


# --------------------------------------------------------------------------------------------------------------
# Frame decoding: the acceptance rules of proto/README.md, for mock services and tests
# --------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class DecodedFrame:
    """One detector message: kind is "frame", "series_start" or "series_end"."""
    kind: str
    message: Any                          # FrameHeader, SeriesStart or SeriesEnd
    spectra: Optional[np.ndarray] = None  # frames: [spectrum_count, channel_count], the wire dtype (read-only)


def decode_frame(parts: Sequence[Any], *, channel_count: Optional[int] = None,
                 max_message_bytes: Optional[int] = None, protos=None) -> DecodedFrame:
    """Decodes a detector message (list of bytes / zmq.Frame) and checks the stateless acceptance rules, in
    the service's order (proto/README.md). channel_count: the current series' (for channel_mismatch).
    Frame ordering (duplicate_frame, out_of_order) needs state and is left to the caller.
    Raises FrameRejected(reason) with a reason from REJECT_REASONS."""
    pb = (protos or load_protos()).frame
    buffers = [p.buffer if isinstance(p, zmq.Frame) else memoryview(p) for p in parts]
    total = sum(b.nbytes for b in buffers)
    if max_message_bytes is not None and total > max_message_bytes:
        raise FrameRejected("too_large", f"{total} bytes > max_message_bytes {max_message_bytes}")
    if not 1 <= len(buffers) <= 2:
        raise FrameRejected("part_count", f"{len(buffers)} parts")
    msg = pb.DetectorMessage()
    try:
        msg.ParseFromString(bytes(buffers[0]))
    except Exception as e:  # google.protobuf.message.DecodeError
        raise FrameRejected("header_parse", f"part 1 is not a DetectorMessage ({e})") from None
    kind = msg.WhichOneof("body")
    if kind is None:
        raise FrameRejected("header_parse", "DetectorMessage without a body")
    expected_parts = 2 if kind == "frame" else 1
    if len(buffers) != expected_parts:
        raise FrameRejected("part_count", f"{kind} in {len(buffers)} parts, expected {expected_parts}")
    body = getattr(msg, kind)
    if kind == "series_start" and (not body.series_id or body.modality not in MODALITIES.values() or
                                   (body.HasField("energy_axis") and not body.energy_axis.dispersion > 0)):
        raise FrameRejected("header_parse", "series start: empty id, unknown modality or dispersion <= 0")
    if kind != "frame":
        return DecodedFrame(kind, body)
    h = body
    if not h.series_id:
        raise FrameRejected("header_parse", "empty series_id")
    if h.spectrum_count == 0 or h.channel_count == 0:
        raise FrameRejected("header_parse", f"spectrum_count {h.spectrum_count}, channel_count {h.channel_count}")
    if h.modality not in MODALITIES.values():
        raise FrameRejected("header_parse", f"unknown modality {h.modality}")
    if h.payload_type not in _PAYLOAD_BY_VALUE:
        raise FrameRejected("payload_type", f"payload_type {h.payload_type}")
    if channel_count is not None and h.channel_count != channel_count:
        raise FrameRejected("channel_mismatch", f"{h.channel_count} channels, series has {channel_count}")
    dtype = _PAYLOAD_BY_VALUE[h.payload_type][1]
    expected = h.spectrum_count * h.channel_count * dtype.itemsize
    if buffers[1].nbytes != expected:
        raise FrameRejected("payload_size", f"{buffers[1].nbytes} bytes, expected {expected}")
    if len(h.positions) not in (0, h.spectrum_count):
        raise FrameRejected("bad_positions", f"{len(h.positions)} positions for {h.spectrum_count} spectra")
    if h.HasField("energy_axis") and not h.energy_axis.dispersion > 0:
        raise FrameRejected("header_parse", f"energy axis dispersion {h.energy_axis.dispersion}")
    spectra = np.frombuffer(buffers[1], dtype=dtype).reshape(h.spectrum_count, h.channel_count)
    if dtype.kind == "f" and (not np.all(np.isfinite(spectra)) or np.any(spectra < 0)):
        raise FrameRejected("bad_value", "NaN, infinity or negative value in a float32 payload")
    return DecodedFrame("frame", h, spectra)


# --------------------------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------------------------

def encode_result(topic: str, envelope, payload: Optional[np.ndarray] = None) -> List[bytes]:
    """Builds a published message: [topic][Envelope][float32 LE payload], the payload part only when given."""
    parts = [topic.encode("ascii"), envelope.SerializeToString()]
    if payload is not None:
        parts.append(np.ascontiguousarray(payload, dtype="<f4").tobytes())
    return parts


@dataclasses.dataclass
class TopicStats:
    """What one EventSubscriber saw on one topic."""
    received: int = 0            # messages delivered
    missed: int = 0              # messages lost: the sum of the sequence gaps
    gaps: int = 0                # times a gap was seen
    restarts: int = 0            # publisher_epoch changes (service restarts) seen on this topic
    duplicates: int = 0          # sequence not above the last one, same epoch (should not happen)
    epoch: Optional[int] = None  # publisher_epoch of the last message
    last_sequence: Optional[int] = None
    first_sequence: Optional[int] = None  # sequence of the first message seen under the current epoch


@dataclasses.dataclass
class Event:
    """One published message, decoded."""
    topic: str
    envelope: Any                      # specwatch.wire.Envelope
    payload: Optional[np.ndarray]      # float32, reshaped: denoised [spectra, channels], snapshot [1+rank, channels],
                                       # residual_map [height, width] (NaN: no value at that position),
                                       # novelty_event [3, channels] (raw, denoised, residual),
                                       # novelty_region [1, channels] (mean raw spectrum of the region)
    raw_payload: Optional[memoryview]  # the payload part as received (also for topics this client can't shape)
    receive_time_s: float              # Unix time of reception
    missed: int = 0                    # messages of this topic lost just before this one (a gap)
    restart: bool = False              # the publisher_epoch changed: the service restarted
    first: bool = False                # first message of this topic seen by this subscriber
    duplicate: bool = False            # sequence not above the previous one under the same epoch
    rebuilt: bool = False              # denoised, scores only: payload rebuilt from scores + snapshot
    model_missing: bool = False        # denoised, scores only: the snapshot of its model_version never came

    @property
    def sequence(self) -> int:
        return self.envelope.sequence

    @property
    def epoch(self) -> int:
        return self.envelope.publisher_epoch

    @property
    def series_id(self) -> str:
        return self.envelope.series_id

    @property
    def kind(self) -> Optional[str]:
        """Name of the Envelope body set: "denoised", "snapshot", "status", "rank_change", "residual_map",
        "novelty_event", "novelty_region", "novelty_calibration", "drift_event", "dose_alarm", "dose_map", "advice",
        "damage_event", or None."""
        return self.envelope.WhichOneof("body")

    @property
    def body(self):
        """DenoisedBatch, ModelSnapshot, Status, RankChange, ResidualMap, NoveltyEvent, NoveltyRegion,
        NoveltyCalibration, DriftEvent, or None."""
        kind = self.kind
        return getattr(self.envelope, kind) if kind else None

    @property
    def scores(self) -> Optional[np.ndarray]:
        """denoised: the scores [spectra, rank] (x_hat = mean + scores @ components of the model version)."""
        if self.kind != "denoised":
            return None
        d = self.envelope.denoised
        return np.asarray(d.scores, dtype=np.float32).reshape(d.spectrum_count, d.rank)

    def _novelty_row(self, row: int) -> Optional[np.ndarray]:
        if self.kind != "novelty_event" or self.payload is None:
            return None
        return self.payload[row]

    @property
    def raw_spectrum(self) -> Optional[np.ndarray]:
        """novelty_event: the novel spectrum as measured [channels], counts."""
        return self._novelty_row(0)

    @property
    def denoised_spectrum(self) -> Optional[np.ndarray]:
        """novelty_event: its reconstruction by the model [channels], counts."""
        return self._novelty_row(1)

    @property
    def residual_spectrum(self) -> Optional[np.ndarray]:
        """novelty_event: raw - denoised [channels], counts: what the model could not explain."""
        return self._novelty_row(2)

    @property
    def mean(self) -> Optional[np.ndarray]:
        """snapshot: the mean spectrum [channels]; novelty_region: the region's mean raw spectrum."""
        if self.kind == "novelty_region" and self.payload is not None:
            return self.payload[0]
        return self.payload[0] if self.topic == "snapshot" and self.payload is not None else None

    @property
    def components(self) -> Optional[np.ndarray]:
        """snapshot: the eigenspectra [rank, channels], by decreasing singular value."""
        return self.payload[1:] if self.topic == "snapshot" and self.payload is not None else None


ADVICE_CODES = {0: "continue", 1: "revisit", 2: "skip"}


def advice_codes(advice) -> np.ndarray:
    """AcquisitionAdvice -> uint8 array [tiles_y, tiles_x]: 0 continue, 1 revisit (at higher dose), 2 skip."""
    return np.frombuffer(advice.tile_codes, dtype=np.uint8).reshape(advice.tiles_y, advice.tiles_x)


def _shape_payload(topic: str, envelope, raw: Optional[memoryview]) -> Optional[np.ndarray]:
    """Reshapes the payload of known topics; raises ProtocolError when its size contradicts the envelope."""
    if topic == "denoised" and envelope.WhichOneof("body") == "denoised":
        d = envelope.denoised
        if d.spectra_omitted:  # scores only: decode() rebuilds the spectra from the model snapshot
            if raw is not None and raw.nbytes:
                raise ProtocolError(f"denoised: spectra_omitted but a payload of {raw.nbytes} bytes")
            if len(d.scores) != d.spectrum_count * d.rank:
                raise ProtocolError(f"denoised: {len(d.scores)} scores, expected {d.spectrum_count}x{d.rank}")
            return None
        rows, cols = d.spectrum_count, d.channel_count
    elif topic == "snapshot" and envelope.WhichOneof("body") == "snapshot":
        rows, cols = 1 + envelope.snapshot.rank, envelope.snapshot.channel_count
    elif topic == "residual_map" and envelope.WhichOneof("body") == "residual_map":
        rows, cols = envelope.residual_map.height, envelope.residual_map.width
    elif topic == "novelty" and envelope.WhichOneof("body") == "novelty_event":
        rows, cols = 3, envelope.novelty_event.channel_count
    elif topic == "novelty" and envelope.WhichOneof("body") == "novelty_region":
        rows, cols = 1, envelope.novelty_region.channel_count
    elif topic == "dose" and envelope.WhichOneof("body") == "dose_map":
        rows, cols = envelope.dose_map.height, envelope.dose_map.width
        nbytes = 0 if raw is None else raw.nbytes
        if nbytes != rows * cols * 8:
            raise ProtocolError(f"dose: payload of {nbytes} bytes, expected {rows}x{cols} float64")
        return np.frombuffer(raw, dtype="<f8").reshape(rows, cols) if raw is not None else np.zeros((rows, cols))
    else:
        return None
    nbytes = 0 if raw is None else raw.nbytes
    if nbytes != rows * cols * 4:
        raise ProtocolError(f"{topic}: payload of {nbytes} bytes, expected {rows}x{cols} float32")
    if raw is None:
        return np.zeros((rows, cols), dtype="<f4")
    return np.frombuffer(raw, dtype="<f4").reshape(rows, cols)


class EventSubscriber:
    """Subscribes to the service's publish socket and yields decoded Events.

    topics: the topics to receive (default TOPICS); None or () for every topic, reserved ones included.
    Per topic it tracks the publisher_epoch and sequence: a sequence jump is a gap (Event.missed, and
    stats[topic].missed), an epoch change a service restart (Event.restart). The first message after
    connecting or after a restart is not a gap, whatever its sequence. Malformed messages are skipped and
    counted in .malformed (strict=True raises ProtocolError instead). One thread only.

    A service configured with denoised_payload: "scores" sends scores instead of spectra and a snapshot of
    every model version first. Subscribed to "snapshot" as well (the default topics), this class keeps the
    last `models_kept` snapshots and rebuilds each denoised payload as mean + scores @ components
    (Event.rebuilt); when the version's snapshot was not received (joined late, or lost) the payload is None,
    Event.model_missing is set and .models_missing counts it.
    """

    def __init__(self, endpoint: str = DEFAULT_PUBLISH_ENDPOINT, topics: Optional[Iterable[str]] = TOPICS, *,
                 context: Optional[zmq.Context] = None, receive_hwm: int = 10000, strict: bool = False,
                 protos=None, models_kept: int = 64):
        self._pb = protos or load_protos()
        self._context = context or zmq.Context.instance()
        self._socket = self._context.socket(zmq.SUB)
        self._socket.setsockopt(zmq.RCVHWM, receive_hwm)
        self._socket.setsockopt(zmq.LINGER, 0)
        self.topics: Optional[set] = None
        topics = list(topics or ())
        for t in topics:
            self.subscribe(t)
        if not topics:
            self._socket.setsockopt(zmq.SUBSCRIBE, b"")
        self.endpoints = attach(self._socket, endpoint, "connect")
        self.strict = strict
        self.stats: Dict[str, TopicStats] = {}
        self.malformed = 0
        self.epoch: Optional[int] = None   # last publisher_epoch seen on any topic
        self.restarts = 0                  # epoch changes seen across topics
        self.models_missing = 0            # scores-only denoised messages whose snapshot never came
        self._models: "collections.OrderedDict[Tuple[int, int], np.ndarray]" = collections.OrderedDict()
        self._models_kept = models_kept

    def subscribe(self, topic: str) -> None:
        if self.topics is None:
            self.topics = set()
        self.topics.add(topic)
        self._socket.setsockopt(zmq.SUBSCRIBE, topic.encode("ascii"))

    def unsubscribe(self, topic: str) -> None:
        if self.topics and topic in self.topics:
            self.topics.discard(topic)
            self._socket.setsockopt(zmq.UNSUBSCRIBE, topic.encode("ascii"))

    @property
    def socket(self) -> zmq.Socket:
        return self._socket

    def close(self) -> None:
        self._socket.close()

    def __enter__(self) -> "EventSubscriber":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __iter__(self) -> Iterator[Event]:
        return self.events()

    def receive(self, timeout_s: Optional[float] = None) -> Optional[Event]:
        """The next event, or None when nothing (well-formed) arrived within timeout_s (None: wait forever)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            if deadline is None:
                wait_ms = -1
            else:
                wait_ms = max(0, int(math.ceil((deadline - time.monotonic()) * 1000)))
            if not self._socket.poll(wait_ms, zmq.POLLIN):
                return None
            parts = self._socket.recv_multipart(copy=False)
            try:
                event = self.decode(parts)
            except ProtocolError as e:
                self.malformed += 1
                if self.strict:
                    raise
                log.warning("skipping malformed message: %s", e)
                continue
            if event is not None:
                return event

    def events(self, timeout_s: Optional[float] = None, count: Optional[int] = None,
               duration_s: Optional[float] = None) -> Iterator[Event]:
        """Yields events until `count` were yielded, `duration_s` passed, or none came for `timeout_s`."""
        end = None if duration_s is None else time.monotonic() + duration_s
        last_activity = time.monotonic()
        yielded = 0
        while count is None or yielded < count:
            wait = timeout_s
            if end is not None:
                left = end - time.monotonic()
                if left <= 0:
                    return
                wait = left if wait is None else min(wait, left)
            event = self.receive(wait)
            if event is None:
                if timeout_s is not None and time.monotonic() - last_activity >= timeout_s:
                    return
                continue
            last_activity = time.monotonic()
            yielded += 1
            yield event

    def decode(self, parts: Sequence[Any]) -> Optional[Event]:
        """Decodes one received message and updates the gap/restart tracking; None for a topic not subscribed
        (ZeroMQ subscriptions match prefixes). Raises ProtocolError for a malformed message."""
        received = time.time()
        buffers = [p.buffer if isinstance(p, zmq.Frame) else memoryview(p) for p in parts]
        if len(buffers) not in (2, 3):
            raise ProtocolError(f"{len(buffers)} parts, expected [topic][envelope][payload?]")
        try:
            topic = bytes(buffers[0]).decode("ascii")
        except UnicodeDecodeError:
            raise ProtocolError("topic is not ASCII") from None
        if self.topics is not None and topic not in self.topics:
            return None
        envelope = self._pb.results.Envelope()
        try:
            envelope.ParseFromString(bytes(buffers[1]))
        except Exception as e:
            raise ProtocolError(f"{topic}: part 2 is not an Envelope ({e})") from None
        raw = buffers[2] if len(buffers) == 3 else None
        payload = _shape_payload(topic, envelope, raw)
        event = Event(topic, envelope, payload, raw, received)
        if event.kind == "snapshot" and payload is not None:
            self._keep_model(envelope.publisher_epoch, envelope.snapshot.model_version, payload)
        elif event.kind == "denoised" and envelope.denoised.spectra_omitted:
            self._rebuild(event)
        self._track(event)
        return event

    def _keep_model(self, epoch: int, version: int, snapshot: np.ndarray) -> None:
        key = (epoch, version)
        self._models[key] = snapshot
        self._models.move_to_end(key)
        while len(self._models) > self._models_kept:
            self._models.popitem(last=False)

    def _rebuild(self, event: Event) -> None:
        d = event.envelope.denoised
        model = self._models.get((event.envelope.publisher_epoch, d.model_version))
        if model is None or model.shape[0] < 1 + d.rank or model.shape[1] != d.channel_count:
            event.model_missing = True
            self.models_missing += 1
            return
        event.payload = model[0] + event.scores @ model[1:1 + d.rank]
        if len(d.spectrum_scale):  # Poisson-weighted model: x_hat_i = sqrt(a_i) (mean + scores @ eigenspectra)
            event.payload *= np.asarray(d.spectrum_scale, dtype=np.float32)[:, None]
        event.rebuilt = True

    def _track(self, event: Event) -> None:
        st = self.stats.setdefault(event.topic, TopicStats())
        epoch, seq = event.envelope.publisher_epoch, event.envelope.sequence
        if self.epoch is not None and epoch != self.epoch:
            self.restarts += 1
        self.epoch = epoch
        if st.epoch is None:
            event.first = True
            st.first_sequence = seq
        elif epoch != st.epoch:
            event.restart = True
            st.restarts += 1
            st.first_sequence = seq
        elif seq <= st.last_sequence:
            event.duplicate = True
            st.duplicates += 1
        elif seq > st.last_sequence + 1:
            event.missed = seq - st.last_sequence - 1
            st.missed += event.missed
            st.gaps += 1
        st.epoch = epoch
        if not event.duplicate:
            st.last_sequence = seq
        st.received += 1


# --------------------------------------------------------------------------------------------------------------
# Control
# --------------------------------------------------------------------------------------------------------------

_COMMAND_ALIASES = {"reset": "reset_model"}


class ControlClient:
    """REQ client of the control socket: one ControlRequest, one ControlReply.

    A REQ socket that timed out cannot send again, so after a timeout the socket is closed and a new one
    connected (the "lazy pirate" pattern). One thread only.
    """

    COMMANDS = ("status", "reset_model", "freeze", "resume", "snapshot", "save_model", "recalibrate",
                "set_dose_budget", "advice", "shutdown")

    def __init__(self, endpoint: str = DEFAULT_CONTROL_ENDPOINT, *, timeout_s: float = 5.0,
                 context: Optional[zmq.Context] = None, protos=None):
        self._pb = protos or load_protos()
        self._context = context or zmq.Context.instance()
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self._socket: Optional[zmq.Socket] = None

    def _connect(self) -> zmq.Socket:
        if self._socket is None:
            self._socket = self._context.socket(zmq.REQ)
            self._socket.setsockopt(zmq.LINGER, 0)
            attach(self._socket, self.endpoint, "connect")
        return self._socket

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def __enter__(self) -> "ControlClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def command_value(self, command: Union[str, int]) -> int:
        """'status' | 'reset' | 'reset_model' | 'COMMAND_FREEZE' | Command value -> Command value."""
        if isinstance(command, (int, np.integer)):
            return int(command)
        name = command.lower().removeprefix("command_")
        name = _COMMAND_ALIASES.get(name, name)
        try:
            return self._pb.control.Command.Value("COMMAND_" + name.upper())
        except ValueError:
            raise ValueError(f"unknown command {command!r}; one of {', '.join(self.COMMANDS)}") from None

    def request(self, command: Union[str, int], timeout_s: Optional[float] = None, *, path: str = "",
                reference_region: Optional[Tuple[int, int, int, int]] = None,
                dose_budget: Optional[Tuple[float, float, float]] = None):
        """Sends the command (with `path` for save_model, `reference_region` (x_min, y_min, x_max, y_max) for
        recalibrate, `dose_budget` (position, run, warning_fraction; e-/A^2, 0 = none / the configured fraction)
        for set_dose_budget) and returns the ControlReply (ok may be false). Raises ControlTimeout."""
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        request = self._pb.control.ControlRequest(command=self.command_value(command), path=path)
        if dose_budget is not None:
            position, run, fraction = (float(v) for v in dose_budget)
            request.dose_budget.position_e_per_A2 = position
            request.dose_budget.run_e_per_A2 = run
            request.dose_budget.warning_fraction = fraction
        if reference_region is not None:
            x_min, y_min, x_max, y_max = (int(v) for v in reference_region)
            request.reference_region.x_min, request.reference_region.y_min = x_min, y_min
            request.reference_region.x_max, request.reference_region.y_max = x_max, y_max
        socket = self._connect()
        socket.send(request.SerializeToString())
        if not socket.poll(int(timeout_s * 1000), zmq.POLLIN):
            self.close()
            raise ControlTimeout(f"no reply from {self.endpoint} within {timeout_s:g} s")
        reply = self._pb.control.ControlReply()
        try:
            reply.ParseFromString(socket.recv())
        except Exception as e:
            self.close()
            raise ProtocolError(f"reply is not a ControlReply ({e})") from None
        return reply

    def _checked(self, command: str, timeout_s: Optional[float], path: str = "", **kwargs):
        reply = self.request(command, timeout_s, path=path, **kwargs)
        if not reply.ok:
            raise ControlError(reply)
        return reply

    def status(self, timeout_s: Optional[float] = None):
        """The service's Status. Raises ControlError / ControlTimeout."""
        return self._checked("status", timeout_s).status

    def reset_model(self, timeout_s: Optional[float] = None):
        return self._checked("reset_model", timeout_s)

    def freeze(self, timeout_s: Optional[float] = None):
        return self._checked("freeze", timeout_s)

    def resume(self, timeout_s: Optional[float] = None):
        return self._checked("resume", timeout_s)

    def snapshot(self, timeout_s: Optional[float] = None):
        return self._checked("snapshot", timeout_s)

    def save_model(self, path: str, timeout_s: Optional[float] = None):
        """The service writes its current model to `path` on the service's host (a snapshot file that
        `specwatch --initial-model` reads). Raises ControlError when it could not (nothing learnt, cannot write)."""
        return self._checked("save_model", timeout_s, path=path)

    def advice(self, timeout_s: Optional[float] = None):
        """The latest AcquisitionAdvice (as published on topic "advice"). Raises ControlError when there is none
        yet (no scan shape, no frame)."""
        return self._checked("advice", timeout_s).advice

    def set_dose_budget(self, position_e_per_A2: float = 0.0, run_e_per_A2: float = 0.0,
                        warning_fraction: float = 0.0, timeout_s: Optional[float] = None):
        """Dose budgets for the current series (0 = none; warning_fraction 0 = the configured one); alarms are
        re-armed and those already due fire at once. Raises ControlError when refused."""
        return self._checked("set_dose_budget", timeout_s,
                             dose_budget=(position_e_per_A2, run_e_per_A2, warning_fraction))

    def recalibrate(self, reference_region: Optional[Tuple[int, int, int, int]] = None,
                    timeout_s: Optional[float] = None):
        """The novelty thresholds are learnt anew from the next nominal spectra (only those at scan positions
        x_min <= x <= x_max, y_min <= y <= y_max when `reference_region` is given); novelty events pause until
        then. Raises ControlError when novelty detection is off."""
        return self._checked("recalibrate", timeout_s, reference_region=reference_region)

    def shutdown(self, timeout_s: Optional[float] = None):
        return self._checked("shutdown", timeout_s)


# --------------------------------------------------------------------------------------------------------------
# Recordings and snapshot files
# --------------------------------------------------------------------------------------------------------------

def read_recording(path: str) -> Iterator[List[bytes]]:
    """Yields the messages of a specwatch-tap recording (or a save_model snapshot file) as lists of parts:
    per message uint32 part count, then per part uint64 size and the bytes, little-endian."""
    import struct
    with open(path, "rb") as f:
        while head := f.read(4):
            if len(head) < 4:
                raise ProtocolError(f"{path}: ends inside a message header")
            (count,) = struct.unpack("<I", head)
            parts = []
            for _ in range(count):
                size_bytes = f.read(8)
                if len(size_bytes) < 8:
                    raise ProtocolError(f"{path}: ends inside a message")
                (size,) = struct.unpack("<Q", size_bytes)
                part = f.read(size)
                if len(part) < size:
                    raise ProtocolError(f"{path}: ends inside a message")
                parts.append(part)
            yield parts


def load_snapshot_file(path: str, protos=None) -> Event:
    """The last snapshot message of a snapshot file or recording, decoded as an Event (payload
    [1 + rank, channels] in counts; .mean, .components; body.channel_scale for weighted models), as the service
    reads it for `initial_model`. Raises ProtocolError when there is none."""
    pb = protos or load_protos()
    last = None
    for parts in read_recording(path):
        if parts and parts[0] == b"snapshot":
            last = parts
    if last is None or len(last) < 2:
        raise ProtocolError(f"{path}: no snapshot message")
    envelope = pb.results.Envelope()
    envelope.ParseFromString(last[1])
    raw = memoryview(last[2]) if len(last) > 2 else None
    return Event("snapshot", envelope, _shape_payload("snapshot", envelope, raw), raw, os.path.getmtime(path))


# --------------------------------------------------------------------------------------------------------------
# Synthetic data
# --------------------------------------------------------------------------------------------------------------

def synthetic_spectrum_image(height: int, width: int, channels: int, *, counts_per_spectrum: float = 200.0,
                             seed: int = 0) -> np.ndarray:
    """Expected counts [height, width, channels] of a small spectrum image: three phases (a matrix, round
    particles, a shell around them), each a decaying continuum plus Gaussian lines, mixed by smooth maps.
    Draw a measurement with np.random.default_rng().poisson(mean)."""
    rng = np.random.default_rng(seed)
    ch = np.arange(channels, dtype=np.float64)
    sigma = max(1.0, channels / 300.0)

    def phase(lines):
        s = np.exp(-ch / (0.4 * channels)) * 0.5
        for centre, height_ in lines:
            s = s + height_ * np.exp(-0.5 * ((ch - centre * channels) / sigma) ** 2)
        return s / s.sum()

    spectra = np.stack([phase([(0.08, 1.0), (0.40, 0.3)]),                # matrix
                        phase([(0.30, 1.5), (0.33, 0.4), (0.75, 0.6)]),   # particle core
                        phase([(0.15, 1.2), (0.62, 0.8)])])               # shell
    yy, xx = np.mgrid[0:height, 0:width]
    core = np.zeros((height, width))
    shell = np.zeros((height, width))
    for _ in range(max(1, (height * width) // 400)):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        radius = rng.uniform(2.0, max(3.0, min(height, width) / 6.0))
        r = np.hypot(yy - cy, xx - cx)
        core = np.maximum(core, 1.0 / (1.0 + np.exp((r - radius) / 0.7)))
        shell = np.maximum(shell, np.exp(-0.5 * ((r - radius - 1.5) / 1.0) ** 2))
    matrix = np.clip(1.0 - core - 0.5 * shell, 0.05, 1.0)
    abundance = np.stack([matrix, core, shell], axis=-1)
    intensity = counts_per_spectrum * (0.8 + 0.4 * rng.random((height, width, 1)))
    return intensity * (abundance / abundance.sum(-1, keepdims=True)) @ spectra
