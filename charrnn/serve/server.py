"""The models, their batchers, the limits and the metrics behind one app."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..errors import InvalidInput
from .batcher import Batcher
from .errors import ApiError
from .metrics import Metrics
from .models import ServedModel, model_names
from .options import Settings


class Server:
    """The models, their batchers, the limits and the metrics behind one app."""

    def __init__(self, checkpoints: list[str | Path], runs: list[str | Path], settings: Settings,
                 log: Callable[[str], None]) -> None:
        if not checkpoints:
            raise InvalidInput("checkpoints", "must name at least one checkpoint")
        self.settings, self.log = settings, log
        self.models = {name: ServedModel(name, src, log) for name, src in zip(model_names(checkpoints), checkpoints)}
        # the directories of the served checkpoints are runs too: training into cv/ shows up live
        self.run_sources = list(runs) + [m.source if m.follows else m.source.parent for m in self.models.values()]
        self.batchers: dict[str, list[Batcher]] = {name: [] for name in self.models}
        self.metrics = Metrics(list(self.models), self.rows, self.queued)
        for served in self.models.values():  # load and warm each engine now, not on the first request
            self.batcher(served)

    def rows(self, name: str) -> int:
        return sum(b.rows for b in self.batchers[name])

    def queued(self, name: str) -> int:
        return sum(len(b.pending) for b in self.batchers[name])

    def model(self, name: str | None) -> ServedModel:
        if name is None or name == "":
            if len(self.models) == 1:
                return next(iter(self.models.values()))
            raise ApiError(400, f"model is required: this server has {', '.join(self.models)}", param="model",
                           code="invalid_value")
        if name not in self.models:
            raise ApiError(404, f"model {name!r} does not exist; this server has {', '.join(self.models)}",
                           param="model", code="model_not_found")
        return self.models[name]

    def batcher(self, served: ServedModel) -> Batcher:
        """The batcher of the newest version; older versions finish their rows and then stop."""
        loaded = served.latest()
        group = self.batchers[served.name]
        if not group or group[-1].model is not loaded:
            s = self.settings
            group.append(Batcher(loaded, s.max_batch, s.max_queue, self.metrics, served.name))
            group[-1].warm()
        for old in group[:-1]:
            if old.idle:
                old.stop()
                group.remove(old)
        return group[-1]

    def close(self) -> None:
        for group in self.batchers.values():
            for b in group:
                b.stop()
