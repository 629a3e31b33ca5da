"""The scorer of the GPU path: the PyTorch model computes the scores, the engine's rule picks the tokens.

It offers what :class:`charrnn.sampling.engine.Engine` offers (slots, ``prime``, ``feed``,
``sample``, ``first``, ``generate``), so the one decode loop (:mod:`charrnn.sampling.decode`) runs
over either. The recurrent state of every slot lives on the model's device, batch on dim 1 as the
model returns it; the random streams and the sampling rule are the engine's, so a seed gives the
same text on a GPU as on the CPU (up to float differences at a boundary of the distribution).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .engine import Slots

if TYPE_CHECKING:
    import torch

    from ..model import CharRNN


class TorchScorer(Slots):
    """Up to ``capacity`` rows of a PyTorch model (any device), scored by the model itself."""

    def __init__(self, model: "CharRNN", capacity: int = 1, device: "torch.device | str | None" = None) -> None:
        import torch

        self.torch = torch
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.model = model
        self._init_slots(capacity, model.config.vocab_size)
        self.state: tuple | None = None  # tensors (layers, capacity, H); created on the first feed

    def _zero_state(self, slot: int) -> None:
        if self.state is not None:
            for t in self.state:
                t[:, slot] = 0

    def copy_state(self, src: int, dst: int) -> None:
        super().copy_state(src, dst)
        if self.state is not None:
            for t in self.state:
                t[:, dst] = t[:, src]

    def _run(self, slots: np.ndarray, tokens: np.ndarray) -> None:
        """Feed ``tokens`` (len(slots), T) to ``slots`` and keep the scores after the last one."""
        torch = self.torch
        index = torch.as_tensor(slots, device=self.device)
        from ..precision import exact_fp32

        # not inference_mode: the state is updated in place later; no TF32: it would part the text from the engine's
        with torch.no_grad(), exact_fp32(self.device):
            state = None if self.state is None else tuple(t.index_select(1, index) for t in self.state)
            scores, new = self.model(torch.as_tensor(tokens, device=self.device), state)
            if self.state is None:
                self.state = tuple(t.new_zeros(t.shape[0], self.capacity, *t.shape[2:]) for t in new)
            for mine, t in zip(self.state, new):
                mine.index_copy_(1, index, t.to(mine.dtype))
        self.scores[slots] = scores[:, -1].float().cpu().numpy()

    def feed(self, slots, tokens) -> None:
        """Advance each slot by one input token (0-based ids)."""
        slots = self._slots(slots)
        self._run(slots, self._tokens(tokens, len(slots))[:, None])

    def prime(self, slot: int, tokens) -> None:
        """Feed a whole sequence of tokens to one slot (one call of the model)."""
        slots = self._slots([slot])
        tokens = np.asarray(tokens, dtype=np.int64).ravel()
        if len(tokens):
            self._run(slots, self._tokens(tokens, len(tokens))[None, :])
