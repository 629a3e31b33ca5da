"""Training progress: a tqdm bar on a terminal, torch-rnn's lines everywhere else."""

from __future__ import annotations

import math
import sys
from typing import TextIO

LOG2E = 1 / math.log(2)


class Progress:
    """Reports iterations as a bar (interactive) or as ``Epoch ... loss = ...`` lines.

    A training subscriber: it also prints validation losses, saved checkpoints, samples and the
    run's other messages (through ``write``, so that they do not tear the bar).
    """

    def __init__(self, total: int, initial: int, num_train: int, max_epochs: int, print_every: int = 1,
                 bar: bool | None = None, quiet: bool = False, stream: TextIO | None = None) -> None:
        self.total, self.num_train, self.max_epochs = total, num_train, max_epochs
        self.print_every, self.quiet = print_every, quiet
        self.stream = stream or sys.stdout
        if bar is None:
            bar = sys.stderr.isatty() and not quiet
        self.bar = None
        if bar:
            from tqdm import tqdm
            self.bar = tqdm(total=total, initial=initial, unit="it", dynamic_ncols=True, file=sys.stderr)

    def line(self, i: int, loss: float) -> str:
        return f"Epoch {i / self.num_train + 1:.2f} / {self.max_epochs}, i = {i} / {self.total}, loss = {loss:f}"

    def update(self, i: int, loss: float, lr: float) -> None:
        if self.bar is not None:
            self.bar.update(1)
            if self.print_every > 0 and i % self.print_every == 0:
                self.bar.set_postfix_str(f"epoch {i / self.num_train + 1:.2f}, loss {loss:.4f}, lr {lr:.2e}", refresh=False)
        elif not self.quiet and self.print_every > 0 and i % self.print_every == 0:
            print(self.line(i, loss), file=self.stream, flush=True)

    def set_total(self, total: int) -> None:
        """A new planned end (a time budget re-plans as it measures its speed)."""
        self.total = total
        if self.bar is not None:
            self.bar.total = total
            self.bar.refresh()

    def write(self, message: str) -> None:
        if self.quiet:
            return
        if self.bar is not None:
            self.bar.write(message, file=sys.stderr)
        else:
            print(message, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    # -- training events ------------------------------------------------------------------------
    def follow(self, run) -> "Progress":
        """Follow a training run's planned end (a time budget changes it)."""
        self.run = run
        return self

    def on_step(self, step) -> None:
        if self.run.total != self.total:
            self.set_total(self.run.total)
        self.update(step.i, step.loss, step.lr)

    def on_evaluation(self, i: int, val_loss: float) -> None:
        vocab = getattr(getattr(self, "run", None), "vocab", None)
        unit = "bits/char" if vocab is None or vocab.plain else "bits/token"  # charrnn eval gives both
        self.write(f"val_loss = {val_loss:f} ({val_loss * LOG2E:.4f} {unit}) at i = {i}")

    def on_checkpoint(self, i: int, path) -> None:
        self.write(f"saved {path}")

    def on_sample(self, i: int, temperature: float, text: str) -> None:
        self.write(f"--- sample at i = {i} (temperature {temperature:g}) ---\n{text}\n---")

    def on_end(self, i: int, reason: str) -> None:
        if reason == "signal":
            self.write(f"stopped by a signal at iteration {i}")
