"""Training: the loop (:mod:`.loop`), one step (:mod:`.step`), its options, schedules, recipes and listeners.

``from charrnn.training import Trainer, TrainConfig, train`` loads torch on first use only, so
the CLI can read the option definitions (:mod:`.options`) without it.
"""

from importlib import import_module

_API = {"Trainer": "loop", "TrainResult": "loop", "train": "loop", "setup": "loop",
        "TrainConfig": "options", "resolve_train_config": "options"}

__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        return getattr(import_module(f".{_API[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
