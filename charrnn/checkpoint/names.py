"""Checkpoint file names: ``<stem>_<iteration>.pt`` (or ``.t7``, ``.json``), parsed and listed in one place.

The one rule for "newest": the **highest iteration**; among files of equal iteration (different
runs in one directory), the most recently modified; then the name. Iterations, not
modification times, decide because they survive copying, syncing and unpacking, and a run's
iterations only grow. ``train --resume DIR`` and ``plot DIR`` use :func:`newest_checkpoint`.

What a user *samples* from a directory (``sample``, ``eval``, ``export``, a server following it)
is the newest run's **best** checkpoint, :func:`best_checkpoint`: the one with the lowest
validation loss that the run measured and that is still on disk, read from the newest
checkpoint's ``.json`` history. A run that overfits near its end (a long time budget) is thus
sampled at its best, while resuming still continues from where it stopped.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

_NAME = re.compile(r"^(?P<stem>.+)_(?P<i>0|[1-9]\d{0,17})(?P<suffix>\.pt|\.t7|\.json)$")
WEIGHTS = (".pt", ".t7")


@dataclass(frozen=True)
class CheckpointName:
    """A checkpoint file name split into its parts: ``cv/run_1000.pt`` = (``cv/run``, 1000, ``.pt``)."""

    stem: str
    iteration: int
    suffix: str = ".pt"

    @classmethod
    def parse(cls, path: str | Path) -> "CheckpointName | None":
        """The parts of ``path``, or None when it is not named ``<stem>_<iteration>.<pt|t7|json>``."""
        path = Path(path)
        m = _NAME.match(path.name)
        if not m:
            return None
        return cls(str(path.with_name(m.group("stem"))), int(m.group("i")), m.group("suffix"))

    @property
    def path(self) -> Path:
        return Path(f"{self.stem}_{self.iteration}{self.suffix}")

    def with_suffix(self, suffix: str) -> "CheckpointName":
        return CheckpointName(self.stem, self.iteration, suffix)


def checkpoint_paths(name: str | Path, iteration: int) -> tuple[Path, Path]:
    """The ``.pt`` and ``.json`` paths for ``--checkpoint-name`` at an iteration."""
    return CheckpointName(str(name), iteration, ".pt").path, CheckpointName(str(name), iteration, ".json").path


def checkpoint_stem(path: str | Path) -> str:
    """``cv/checkpoint_1000.pt`` -> ``cv/checkpoint`` (a path without an iteration is returned without suffix)."""
    parsed = CheckpointName.parse(path)
    return parsed.stem if parsed else str(Path(path).with_suffix(""))


def _newest_key(name: CheckpointName):
    try:
        mtime = name.path.stat().st_mtime
    except OSError:
        mtime = 0.0
    return name.iteration, mtime, name.path.name


def list_checkpoints(directory: str | Path, suffixes=WEIGHTS) -> list[CheckpointName]:
    """Every checkpoint file in ``directory`` with one of ``suffixes``, oldest first (by the newest rule)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [n for p in directory.iterdir() if (n := CheckpointName.parse(p)) and n.suffix in suffixes]
    return sorted(found, key=_newest_key)


def newest_checkpoint(directory: str | Path, suffixes=WEIGHTS) -> Path | None:
    """The newest checkpoint file in ``directory`` (highest iteration; see the module docstring), or None."""
    found = list_checkpoints(directory, suffixes)
    return found[-1].path if found else None


MAX_HISTORY_BYTES = 256 << 20  # a JSON history larger than this is not read (10M iterations is ~200 MB)


def best_checkpoint(directory: str | Path, suffixes=WEIGHTS) -> Path | None:
    """The newest run's checkpoint with the lowest measured validation loss (see the module docstring).

    Falls back to the newest checkpoint when its ``.json`` history is absent, unreadable or names
    no checkpoint still on disk.
    """
    newest = newest_checkpoint(directory, suffixes)
    if newest is None:
        return None
    return best_of_run(newest, _validations(newest.with_suffix(".json")))


def best_of_run(newest: Path, validations) -> Path:
    """Of ``newest``'s run, the checkpoint on disk with the lowest of ``validations`` ((iteration, loss)
    pairs); among equal losses the later iteration; ``newest`` when none is on disk."""
    name = CheckpointName.parse(newest)
    if name is None:
        return newest
    for _, minus_it in sorted((loss, -it) for it, loss in validations if math.isfinite(loss)):
        candidate = CheckpointName(name.stem, -minus_it, name.suffix).path
        if candidate.is_file():
            return candidate
    return newest


def _validations(path: Path) -> list[tuple[int, float]]:
    """(iteration, validation loss) pairs of a checkpoint's JSON history; empty when unusable."""
    try:
        if path.stat().st_size > MAX_HISTORY_BYTES:
            return []
        info = json.loads(path.read_text(encoding="utf-8"))
        its, losses = info["val_loss_history_it"], info["val_loss_history"]
    except (OSError, ValueError, UnicodeDecodeError, KeyError, TypeError):
        return []
    if not isinstance(its, list) or not isinstance(losses, list) or len(its) != len(losses):
        return []
    return [(it, float(loss)) for it, loss in zip(its, losses)
            if isinstance(it, int) and not isinstance(it, bool) and it >= 0
            and isinstance(loss, (int, float)) and not isinstance(loss, bool)]


def existing_checkpoints(name: str | Path) -> list[Path]:
    """The ``.pt`` files of one checkpoint name (``--checkpoint-name``), oldest iteration first."""
    return [n.path for n in list_checkpoints(Path(name).parent, (".pt",)) if Path(n.stem) == Path(name)]


def remove_stale_temporaries(name: str | Path) -> None:
    """Delete temporary files that a killed run left behind for this checkpoint name."""
    name = Path(name)
    if name.parent.is_dir():
        for tmp in name.parent.glob(f".{name.name}_*.tmp"):
            tmp.unlink(missing_ok=True)
