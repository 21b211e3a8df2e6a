"""The workflows' Argo custom metrics on this machine, emitted as Argo's workflow controller emits them.

On the cluster the controller reads each template's `metrics.prometheus` when the template's node
completes, and the workflow's when the workflow ends; it substitutes the node's variables (`{{status}}`,
`{{duration}}`, `{{inputs.parameters.x}}`, `{{outputs.parameters.x}}`, and the workflow's, among them
`{{workflow.status}}` and `{{workflow.duration}}`) into every field, skips the metric when its `when`
does not hold, then adds a counter's value, sets a gauge, or observes a histogram, under the name
`argo_workflows_<name>`. A metric it cannot emit is reported and skipped: the workflow goes on. The
local runner calls `WorkflowMetrics.emit` at the same moments with the same variables, so the samples
here are the ones the controller would expose (without the `<name>_created` samples prometheus_client
adds to counters and histograms, which Argo's have not), in a registry of their own that `serve`
exposes over HTTP for the local Prometheus.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.metrics_core import Metric as MetricFamily

from workflows.local.runner import WorkflowFailed, substitute, when_holds

log = logging.getLogger("dandelion.workflow_metrics")

PREFIX = "argo_workflows_"  # what Argo's controller puts before a custom metric's name
KINDS = ("counter", "gauge", "histogram")

Instrument = Counter | Gauge | Histogram


class MetricNotEmitted(ValueError):
    """A metric the controller would report as a metrics-error condition instead of emitting it."""


# Why a metric is not emitted: an unresolved variable or a `when` the runner cannot evaluate
# (WorkflowFailed), a field missing, a value prometheus_client refuses, or MetricNotEmitted.
NOT_EMITTED = (WorkflowFailed, LookupError, ValueError)


@dataclass(frozen=True)
class MetricsServer:
    """The HTTP server `WorkflowMetrics.serve` started, in a thread of its own."""

    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        """The port it listens on: the one asked for, or the one the system chose for port 0."""
        return self.server.server_port

    def shutdown(self) -> None:
        """Stop serving, close the socket, and wait for the thread."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@dataclass(frozen=True)
class _Identity:
    """What a metric's name stands for once created: Argo refuses to change a name's type or help, and a
    Prometheus metric also fixes its label names and buckets."""

    kind: str
    help: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] = ()


class _AsArgoExposes:
    """Collects the instruments of a registry without the `<name>_created` samples."""

    def __init__(self, instruments: CollectorRegistry) -> None:
        self.instruments = instruments

    def collect(self) -> Iterator[MetricFamily]:
        for family in self.instruments.collect():
            family.samples = [s for s in family.samples if s.name != f"{family.name}_created"]
            yield family


class WorkflowMetrics:
    """The Argo custom metrics of the workflows run on this machine, in `registry`."""

    def __init__(self) -> None:
        self._instruments = CollectorRegistry()
        self.registry = CollectorRegistry()
        self.registry.register(_AsArgoExposes(self._instruments))
        self._metrics: dict[str, tuple[_Identity, Instrument]] = {}
        self._lock = threading.Lock()  # the runner's DAG tasks complete in threads of their own

    def emit(self, prometheus: Iterable[Mapping[str, Any]], variables: Mapping[str, str]) -> None:
        """Emit a template's or a workflow's `metrics.prometheus` entries (as rendered) with `variables`,
        each whose `when` holds; one that cannot be emitted is logged and skipped, as Argo skips it."""
        for spec in prometheus:
            try:
                self._emit(spec, variables)
            except NOT_EMITTED as exc:
                log.warning("metric %s not emitted: %s", spec.get("name"), exc)

    def serve(self, port: int, addr: str = "127.0.0.1") -> MetricsServer:
        """Expose the registry at http://addr:port/metrics (port 0: any free port) until `shutdown`."""
        server, thread = start_http_server(port, addr=addr, registry=self.registry)
        return MetricsServer(server, thread)

    def _emit(self, spec: Mapping[str, Any], variables: Mapping[str, str]) -> None:
        # `when` is read first: on Argo a failed step's outputs are blanks (Hera's runner writes them),
        # here they are absent, and either way a metric that waits for success is skipped quietly.
        if not when_holds(substitute(spec.get("when", ""), variables)):
            return
        kinds = [kind for kind in KINDS if kind in spec]
        if len(kinds) != 1:
            raise MetricNotEmitted(f"needs exactly one of {', '.join(KINDS)}")
        kind, body = kinds[0], spec[kinds[0]]
        name, help_ = substitute(spec["name"], variables), substitute(spec.get("help", ""), variables)
        labels = {label["key"]: substitute(label["value"], variables) for label in spec.get("labels") or []}
        text = substitute(str(body["value"]), variables)
        if not help_:
            raise MetricNotEmitted("a metric needs a help string")
        if body.get("realtime"):
            raise MetricNotEmitted("real-time gauges are not emitted locally")
        try:
            value = float(text)
        except ValueError:
            raise MetricNotEmitted(f"value {text!r} is not a number") from None
        buckets = tuple(float(b) for b in body.get("buckets", ()))
        metric = self._metric(name, _Identity(kind, help_, tuple(sorted(labels)), buckets))
        series = metric.labels(**labels) if labels else metric
        if isinstance(series, Counter):
            series.inc(value)
        elif isinstance(series, Histogram):
            series.observe(value)
        elif body.get("operation") == "Add":
            series.inc(value)
        elif body.get("operation") == "Sub":
            series.dec(value)
        else:  # Set, Argo's default
            series.set(value)

    def _metric(self, name: str, identity: _Identity) -> Instrument:
        """The metric for `name`, created on first use."""
        with self._lock:
            if name in self._metrics:
                known, metric = self._metrics[name]
                if known != identity:
                    raise MetricNotEmitted(f"{name} is already {known}, not {identity}")
                return metric
            full = PREFIX + name
            common: dict[str, Any] = {"labelnames": identity.labels, "registry": self._instruments}
            if identity.kind == "counter":
                metric = Counter(full, identity.help, **common)
            elif identity.kind == "histogram":
                metric = Histogram(full, identity.help, buckets=identity.buckets, **common)
            else:
                metric = Gauge(full, identity.help, **common)
            self._metrics[name] = (identity, metric)
            return metric
