"""Prometheus metrics of ``edged serve`` (reference: ``edged/PROTOCOL.md``, "Metrics").

Every metric is created on an injected ``CollectorRegistry`` so each test builds an
isolated daemon. Names follow Prometheus conventions: ``edged_`` prefix, base units,
``_total`` on counters (prometheus_client appends it). Labels are bounded: the reject
``reason`` set is fixed (``edged.protocol.REASONS``); no stream ids or sequence numbers.
"""

from __future__ import annotations

import contextlib
import platform
from bisect import bisect_left
from itertools import accumulate
from typing import TYPE_CHECKING

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.metrics_core import HistogramMetricFamily
from prometheus_client.utils import floatToGoString

from edged.jit import bound
from edged.protocol import REASONS

if TYPE_CHECKING:
    from edged.model import Model

#: decision latency buckets, 5 µs .. 100 ms (the 2.5 ms p99 budget sits on a bound)
LATENCY_BUCKETS = (5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3,
                   1e-2, 2.5e-2, 5e-2, 0.1)
#: frames per batch, 1 .. 256 (the serve loop reads at most 256 per wake-up)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class LoopHistogram:
    """A Prometheus histogram observed by the serving loop alone: ``observe`` is one bisect
    and an increment (no lock, ~10x cheaper than ``prometheus_client.Histogram``);
    the scrape thread reads a snapshot. Exposed exactly like a client_python Histogram."""

    def __init__(self, name: str, documentation: str, buckets: tuple[float, ...],
                 registry: CollectorRegistry):
        self.name, self.documentation = name, documentation
        self.bounds = [float(b) for b in buckets]
        self._bounds = np.array(self.bounds)
        self.counts = np.zeros(len(self.bounds) + 1, np.int64)  # the last one is +Inf
        self.total = 0.0
        registry.register(self)

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def observe_all(self, values: np.ndarray) -> None:
        """``observe`` each of ``values`` (float64), in one compiled call."""
        self.total += _observe_all(self._bounds, values, self.counts)

    def describe(self):
        return [HistogramMetricFamily(self.name, self.documentation)]

    def collect(self):
        counts, total = self.counts.tolist(), self.total
        les = [floatToGoString(b) for b in self.bounds] + ["+Inf"]
        yield HistogramMetricFamily(self.name, self.documentation,
                                    buckets=list(zip(les, accumulate(counts))), sum_value=total)


def _count(bounds, values, counts):
    """Count each value in the first bucket whose bound is >= it (the last: +Inf); return their sum."""
    total = 0.0
    for v in values:
        counts[np.searchsorted(bounds, v)] += 1
        total += v
    return total


_observe_all = bound(_count)


def boundary_metrics(r: CollectorRegistry) -> tuple[Counter, Counter, Counter]:
    """The counters of whoever owns the public ingest socket (a ``Service``, or the router of
    ``--workers``): rejected frames by reason, refused CURVE handshakes, ingest disconnects."""
    rejected = Counter("edged_frames_rejected_total", "Ingest frames rejected whole, by reason",
                       ["reason"], registry=r)
    for reason in REASONS:
        rejected.labels(reason)
    auth = Counter("edged_zmq_auth_failures", "CURVE handshakes refused (unknown key, bad handshake)",
                   ["socket"], registry=r)
    for sock in ("ingest", "publish"):
        auth.labels(sock)
    disconnects = Counter("edged_zmq_disconnects_total",
                          "Ingest peers disconnected (e.g. a frame over max_frame_bytes)", registry=r)
    return rejected, auth, disconnects


class Metrics:
    """The daemon's metric objects, registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry):
        r = registry
        self.latency = LoopHistogram(
            "edged_decision_latency_seconds",
            "Frame receipt to decision publish, per decision", LATENCY_BUCKETS, r)
        self.frame_seconds = LoopHistogram(
            "edged_frame_processing_seconds",
            "Frame receipt to its last decision published, per frame with decisions",
            LATENCY_BUCKETS, r)
        self.batch_frames = LoopHistogram(
            "edged_batch_frames",
            "Frames advanced per batch (one compiled engine call, one readout call)",
            BATCH_BUCKETS, r)
        self.events = Counter("edged_events_total", "Spike events accepted", registry=r)
        self.frames = Counter("edged_frames_total", "Ingest frames received (accepted or rejected)",
                              registry=r)
        self.rejected, self.zmq_auth_failures, self.zmq_disconnects = boundary_metrics(r)
        self.seq_gaps = Counter("edged_seq_gaps_total",
                                "Ingest frames whose seq was not the stream's previous seq + 1",
                                registry=r)
        self.decisions = Counter("edged_decisions_total", "Decisions published", registry=r)
        self.decisions_undelivered = Counter(
            "edged_decisions_undelivered_total",
            "--workers: decisions a worker dropped, its queue to the router full", registry=r)
        self.streams_active = Gauge("edged_streams_active", "Streams holding state", registry=r)
        self.streams_capacity = Gauge("edged_streams_capacity", "Most concurrent streams (--max-streams)",
                                      registry=r)
        self.streams_expired = Counter("edged_streams_expired_total",
                                       "Streams dropped after --idle-timeout without frames", registry=r)
        self.synaptic_ops = Counter("edged_synaptic_ops_total",
                                    "Synaptic accumulate operations simulated", registry=r)
        self.energy = Counter("edged_energy_joules_total",
                              "ESTIMATED compute energy (model in PROTOCOL.md), not measured", registry=r)
        self.cpu = Counter("edged_processing_cpu_seconds_total",
                           "CPU seconds of the serving thread spent on frames", registry=r)
        self.steps = Counter("edged_steps_total", "Stream time steps completed", registry=r)
        self.ready = Gauge("edged_ready", "1 once kernels are compiled and warmed and sockets bound",
                           registry=r)
        self.model_info = Gauge("edged_model_info", "The served model (value 1)",
                                ["sha256", "neuron", "n_in", "n_hidden", "n_out", "window", "hop",
                                 "variant", "classes"], registry=r)
        self.build_info = Gauge("edged_build_info", "Versions of edged and its runtime (value 1)",
                                ["version", "python", "numpy", "numba", "onnxruntime", "pyzmq",
                                 "libzmq"], registry=r)
        self.start_time = Gauge("edged_start_time_seconds", "Unix time this process started serving",
                                registry=r)
        self.epoch = Gauge("edged_epoch", "This incarnation's epoch (as in every decision)", registry=r)
        self.warmup = Gauge("edged_warmup_seconds", "Seconds spent compiling and warming kernels",
                            registry=r)
        self.checkpoint_restore = Counter(
            "edged_checkpoint_restore", "Start-ups by checkpoint outcome: ok (warm restart), none "
            "(no checkpoint), mismatch (other model/shape), corrupt (unreadable): cold otherwise",
            ["result"], registry=r)
        for result in ("ok", "none", "mismatch", "corrupt"):
            self.checkpoint_restore.labels(result)
        self.checkpoint_writes = Counter("edged_checkpoint_writes", "Checkpoint writes by result",
                                         ["result"], registry=r)
        for result in ("ok", "error"):
            self.checkpoint_writes.labels(result)
        self.checkpoint_last_success = Gauge(
            "edged_checkpoint_last_success_timestamp_seconds",
            "Unix time of the last checkpoint written (0: none yet)", registry=r)
        self.checkpoint_seconds = Gauge("edged_checkpoint_duration_seconds",
                                        "Seconds the last checkpoint took (snapshot + write)", registry=r)
        self.checkpoint_streams = Gauge("edged_checkpoint_streams", "Streams in the last checkpoint",
                                        registry=r)
        self.checkpoint_size = Gauge("edged_checkpoint_size_bytes", "Size of the last checkpoint file",
                                     registry=r)
        self.nats_frames_lost = Counter(
            "edged_nats_frames_lost_total",
            "NATS: input frames that left the JetStream log (retention) before edged read them",
            registry=r)
        self.nats_duplicates = Counter(
            "edged_nats_duplicate_decisions_total",
            "NATS: decisions JetStream dropped as already stored (republished by a replay)", registry=r)
        self.nats_publish_errors = Counter(
            "edged_nats_publish_errors_total",
            "NATS: decision publishes refused, failed to send or not confirmed in time (published again)",
            registry=r)
        self.nats_unconfirmed = Gauge(
            "edged_nats_unconfirmed_decisions",
            "NATS: decisions awaiting NATS's confirmation, in flight and queued", registry=r)
        self.nats_ingest_paused = Gauge(
            "edged_nats_ingest_paused",
            "NATS: 1 while input is not pulled, more than --nats-max-unconfirmed decisions awaiting "
            "confirmation", registry=r)
        self.nats_ingest_pauses = Counter(
            "edged_nats_ingest_pauses_total",
            "NATS: times input pulling paused for back-pressure (--nats-max-unconfirmed)", registry=r)

    def describe_model(self, model: "Model") -> None:
        self.model_info.labels(model.sha256, model.neuron, str(model.n_in), str(model.n_hidden),
                               str(model.n_out), str(model.window), str(model.hop), model.variant,
                               ",".join(model.classes)).set(1)

    def describe_build(self, libzmq: str) -> None:
        from edged import versions

        v = versions(("edged", "numpy", "numba", "onnxruntime", "pyzmq"))
        self.build_info.labels(v["edged"], platform.python_version(), v["numpy"], v["numba"],
                               v["onnxruntime"], v["pyzmq"], libzmq).set(1)


class RouterMetrics:
    """The ``--workers`` supervisor's own metrics (``edged.workers``); ``Aggregate`` exposes
    them with ``worker="router"`` unless they carry a ``worker`` label of their own."""

    def __init__(self, registry: CollectorRegistry, workers: int):
        r = registry
        self.rejected, self.zmq_auth_failures, self.zmq_disconnects = boundary_metrics(r)
        self.ready = Gauge("edged_ready", "1 once kernels are compiled and warmed and sockets bound",
                           registry=r)
        Gauge("edged_workers", "Serving processes configured (--workers)", registry=r).set(workers)
        self.up = Gauge("edged_worker_up", "1 while the worker is running and ready", ["worker"],
                        registry=r)
        self.restarts = Counter("edged_worker_restarts", "Workers started again after they died",
                                ["worker"], registry=r)
        self.routed = Counter("edged_router_frames", "Ingest frames the router passed to the worker",
                              ["worker"], registry=r)
        for i in range(workers):
            for m in (self.up, self.restarts, self.routed):
                m.labels(str(i))
        self.cpu = Counter("edged_router_cpu_seconds_total",
                           "CPU seconds of the router thread routing frames and publishing decisions",
                           registry=r)


class Aggregate:
    """One ``/metrics`` for ``--workers``: the supervisor's ``own`` registry (``worker="router"``)
    and each worker's ``/metrics`` (``worker="<i>"``), fetched at scrape time from
    ``urls()`` (``{worker: url}``) and merged family by family. A worker that does not answer
    within ``timeout`` seconds is left out of that scrape."""

    def __init__(self, own: CollectorRegistry, urls, timeout: float = 2.0):
        self.own, self.urls, self.timeout = own, urls, timeout

    def describe(self):
        return []

    def collect(self):
        import urllib.request

        from prometheus_client.metrics_core import Metric
        from prometheus_client.parser import text_string_to_metric_families

        families: dict[str, Metric] = {}

        def add(family, worker: str) -> None:
            f = families.get(family.name)
            if f is None:
                f = families[family.name] = Metric(family.name, family.documentation, family.type,
                                                   family.unit)
            for s in family.samples:
                labels = s.labels if "worker" in s.labels else {**s.labels, "worker": worker}
                f.samples.append(s._replace(labels=labels))

        for family in self.own.collect():
            add(family, "router")
        for worker, url in sorted(self.urls().items()):
            try:
                text = urllib.request.urlopen(url, timeout=self.timeout).read().decode()
            except (OSError, ValueError):  # restarting, or stuck: its series skip this scrape
                continue
            for family in text_string_to_metric_families(text):
                add(family, str(worker))
        yield from families.values()


def serve_http(registry: CollectorRegistry, host: str, port: int):
    """Start ``/metrics`` on ``host:port`` (a daemon thread); return ``(server, port)``."""
    from prometheus_client import start_http_server

    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server, server.server_address[1]


@contextlib.contextmanager
def exposed(registry: CollectorRegistry, address: tuple[str, int] | None, endpoints: dict[str, str]):
    """``/metrics`` of ``registry`` on ``address`` (``None``: off) for the ``with`` block;
    its URL goes in ``endpoints["metrics"]``."""
    if address is None:
        yield
        return
    server, port = serve_http(registry, *address)
    endpoints["metrics"] = f"http://{address[0]}:{port}/metrics"
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
