"""Prometheus metrics for one app (its own registry, so several apps can live in one process)."""

from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self, models: list[str], rows: Callable[[str], int], queued: Callable[[str], int]) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("charrnn_requests", "Completion requests by model and HTTP status",
                                ["model", "status"], registry=r)
        self.chars = Counter("charrnn_characters", "Characters generated", ["model"], registry=r)
        self.rejects = Counter("charrnn_rejects", "Requests rejected, by reason", ["reason"], registry=r)
        active = Gauge("charrnn_active_rows", "Rows being generated now", ["model"], registry=r)
        queue = Gauge("charrnn_queue_length", "Requests waiting for a free row", ["model"], registry=r)
        for name in models:
            active.labels(name).set_function(lambda name=name: rows(name))
            queue.labels(name).set_function(lambda name=name: queued(name))
        self.batch = Histogram("charrnn_batch_size", "Rows stepped together per engine step",
                               buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=r)
        self.step_time = Histogram("charrnn_step_seconds", "Time of one engine step",
                                   buckets=(1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1), registry=r)

    def step(self, rows: int, seconds: float) -> None:
        self.batch.observe(rows)
        self.step_time.observe(seconds)

    def characters(self, model: str, n: int) -> None:
        if n:
            self.chars.labels(model).inc(n)

    def reject(self, reason: str) -> None:
        self.rejects.labels(reason).inc()

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
