"""Sampling text from a trained model, streamed as it is generated, in constant memory."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import torch

from .checkpoint import load_checkpoint
from .device import select_device
from .errors import CharRNNError
from .model import CharRNN
from .vocab import Vocabulary


class Sampler:
    """Generates text from a model; ``Sampler.from_checkpoint(path).generate(...)``."""

    def __init__(self, model: CharRNN, vocab: Vocabulary, device: torch.device | str = "cpu") -> None:
        self.model = model.to(device).eval()
        self.vocab = vocab
        self.device = torch.device(device)

    @classmethod
    def from_checkpoint(cls, path: str | Path, gpu: int | None = -1, gpu_backend: str = "cuda") -> "Sampler":
        device = select_device(gpu, gpu_backend)
        ckpt = load_checkpoint(path)
        return cls(ckpt.build_model(device), ckpt.vocab, device)

    @torch.inference_mode()
    def generate(self, length: int = 2000, start_text: str = "", argmax: bool = False,
                 temperature: float = 1.0, seed: int | None = None, chunk: int = 256) -> Iterator[str | bytes]:
        """Yield ``length`` characters (start text included) in pieces of about ``chunk``.

        Without start text the first character is drawn uniformly (argmax takes the first
        token), as torch-rnn does. In bytes mode the pieces are bytes.
        """
        if length < 1:
            raise CharRNNError(f"--length must be positive (got {length})")
        if not temperature > 0:
            raise CharRNNError(f"--temperature must be positive (got {temperature})")
        start = self.vocab.encode(start_text) if start_text else None
        if start is not None and len(start) > length:
            raise CharRNNError(f"--length {length} is shorter than the start text ({len(start)} tokens)")
        gen = torch.Generator(device=self.device)
        gen.manual_seed(seed if seed is not None else torch.seed())
        V = len(self.vocab)
        tokens = self.vocab.token_array()
        state = None
        if start is not None:
            yield self._decode(tokens, start)
            x = torch.as_tensor(start - 1, device=self.device).view(1, -1)  # the model counts from 0
            scores, state = self.model(x, state)
            scores = scores[:, -1]
            remaining = length - len(start)
        else:
            scores = torch.ones(1, V, device=self.device)
            remaining = length
        out: list[int] = []
        for t in range(remaining):
            if argmax:
                nxt = scores.argmax(dim=-1, keepdim=True)
            else:
                probs = torch.softmax(scores.float() / temperature, dim=-1)
                nxt = torch.multinomial(probs, 1, generator=gen)
            out.append(int(nxt) + 1)
            if len(out) >= chunk:
                yield self._decode(tokens, out)
                out = []
            if t + 1 < remaining:
                scores, state = self.model(nxt.view(1, 1), state)
                scores = scores[:, -1]
        if out:
            yield self._decode(tokens, out)

    def _decode(self, tokens, ids) -> str | bytes:
        values = tokens[list(ids) if not hasattr(ids, "dtype") else ids]
        if self.vocab.byte_mode:
            return bytes(values.astype("uint8"))
        return "".join(map(chr, values))


def sample(checkpoint: str | Path, length: int = 2000, start_text: str = "", argmax: bool = False,
           temperature: float = 1.0, seed: int | None = None, gpu: int | None = -1) -> str | bytes:
    """Sample text from a checkpoint and return it whole (the CLI streams instead)."""
    sampler = Sampler.from_checkpoint(checkpoint, gpu=gpu)
    pieces = list(sampler.generate(length, start_text, argmax, temperature, seed))
    return (b"" if sampler.vocab.byte_mode else "").join(pieces)
