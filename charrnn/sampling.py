"""Sampling text from a trained model, streamed as it is generated, in constant memory."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from typing import TYPE_CHECKING

import numpy as np

from .checkpoint import load_checkpoint, resolve_checkpoint
from .config import ModelConfig
from .errors import CharRNNError
from .vocab import Vocabulary

if TYPE_CHECKING:
    import torch

    from .model import CharRNN


class Sampler:
    """Generates text from a model; ``Sampler.from_checkpoint(path).generate(...)``.

    On the CPU the work runs on NumPy (see :mod:`charrnn.fastsample`); a charrnn ``.pt``
    checkpoint sampled on the CPU never even imports torch, so the first character comes fast.
    """

    def __init__(self, model: "CharRNN", vocab: Vocabulary, device: "torch.device | str" = "cpu") -> None:
        import torch

        self.model = model.to(device).eval()
        self.config, self.weights = model.config, None
        self.vocab = vocab
        self.device = torch.device(device)
        self.device_type = self.device.type

    @classmethod
    def from_weights(cls, config: ModelConfig, weights: dict, vocab: Vocabulary) -> "Sampler":
        """A CPU sampler over NumPy weights (a ``state_dict`` as arrays), without torch."""
        self = cls.__new__(cls)
        self.model, self.device = None, None
        self.config, self.weights, self.vocab, self.device_type = config, weights, vocab, "cpu"
        return self

    @classmethod
    def from_checkpoint(cls, path: str | Path, gpu: int | None = -1, gpu_backend: str = "cuda") -> "Sampler":
        resolved = resolve_checkpoint(path)
        if gpu is not None and gpu < 0 and resolved.suffix == ".pt":
            from .ptreader import read_pt
            payload = read_pt(resolved)
            return cls.from_weights(payload.config, payload.model_state, payload.vocab)
        from .device import select_device
        device = select_device(gpu, gpu_backend)
        ckpt = load_checkpoint(resolved)
        return cls(ckpt.build_model(device), ckpt.vocab, device)

    def _check(self, length: int, start_text: str, temperature: float):
        if length < 1:
            raise CharRNNError(f"--length must be positive (got {length})")
        if not temperature > 0:
            raise CharRNNError(f"--temperature must be positive (got {temperature})")
        start = self.vocab.encode(start_text) - 1 if start_text else None  # 0-based for the model
        if start is not None and len(start) > length:
            raise CharRNNError(f"--length {length} is shorter than the start text ({len(start)} tokens)")
        return start

    def _engine(self, streams: int, start, argmax: bool, temperature: float, seed: int | None):
        """A primed NumPy engine and the first tokens to emit."""
        from .fastsample import NumpyEngine

        if self.weights is not None:
            engine = NumpyEngine(self.config, self.weights, streams, temperature, argmax, seed)
        else:
            engine = NumpyEngine.from_model(self.model, streams, temperature, argmax, seed)
        if start is None:
            return engine, engine.first()
        for token in start:
            engine.feed(np.full(streams, token))
        return engine, engine.choose()

    def generate(self, length: int = 2000, start_text: str = "", argmax: bool = False,
                 temperature: float = 1.0, seed: int | None = None, chunk: int = 256) -> Iterator[str | bytes]:
        """Yield ``length`` characters (start text included) in pieces of about ``chunk``.

        Without start text the first character is drawn uniformly (argmax takes the first
        token), as torch-rnn does. In bytes mode the pieces are bytes.
        """
        start = self._check(length, start_text, temperature)
        if start is not None:
            yield self._decode(start)
        remaining = length - (0 if start is None else len(start))
        if self.device_type != "cpu":
            yield from self._generate_torch(remaining, start, argmax, temperature, seed, chunk)
            return
        engine, nxt = self._engine(1, start, argmax, temperature, seed)
        buf, n = np.empty(chunk, dtype=np.int64), 0
        for t in range(remaining):
            buf[n] = nxt[0]
            n += 1
            if n == chunk:
                yield self._decode(buf)
                n = 0
            if t + 1 < remaining:
                engine.feed(nxt)
                nxt = engine.choose()
        if n:
            yield self._decode(buf[:n])

    def generate_many(self, num_samples: int, length: int = 2000, start_text: str = "", argmax: bool = False,
                      temperature: float = 1.0, seed: int | None = None) -> list[str | bytes]:
        """``num_samples`` independent samples, computed together as one batch (CPU)."""
        if num_samples < 1:
            raise CharRNNError(f"--num-samples must be positive (got {num_samples})")
        start = self._check(length, start_text, temperature)
        prefix = [] if start is None else list(start)
        remaining = length - len(prefix)
        engine, nxt = self._engine(num_samples, start, argmax, temperature, seed)
        out = np.empty((num_samples, remaining), dtype=np.int64)
        for t in range(remaining):
            out[:, t] = nxt
            if t + 1 < remaining:
                engine.feed(nxt)
                nxt = engine.choose()
        return [self._decode(np.concatenate([prefix, row]).astype(np.int64)) for row in out]

    def _generate_torch(self, remaining: int, start, argmax: bool, temperature: float, seed: int | None,
                        chunk: int) -> Iterator[str | bytes]:
        """The same sampling with the PyTorch model, for GPUs."""
        import torch

        with torch.inference_mode():
            yield from self._torch_loop(torch, remaining, start, argmax, temperature, seed, chunk)

    def _torch_loop(self, torch, remaining, start, argmax, temperature, seed, chunk):
        gen = torch.Generator(device=self.device)
        gen.manual_seed(seed if seed is not None else torch.seed())
        V = len(self.vocab)
        state = None
        if start is not None:
            scores, state = self.model(torch.as_tensor(start, device=self.device).view(1, -1))
            scores = scores[:, -1]
        else:
            scores = torch.zeros(1, V, device=self.device)
        out: list[int] = []
        for t in range(remaining):
            if argmax:
                nxt = scores.argmax(dim=-1, keepdim=True)
            else:
                probs = torch.softmax(scores.float() / temperature, dim=-1)
                nxt = torch.multinomial(probs, 1, generator=gen)
            out.append(int(nxt))
            if len(out) >= chunk:
                yield self._decode(np.array(out))
                out = []
            if t + 1 < remaining:
                scores, state = self.model(nxt.view(1, 1), state)
                scores = scores[:, -1]
        if out:
            yield self._decode(np.array(out))

    def _decode(self, ids: np.ndarray) -> str | bytes:
        """Text (or bytes) for 0-based token ids."""
        return self.vocab.decode(np.asarray(ids) + 1)

    def text(self, length: int = 2000, start_text: str = "", argmax: bool = False, temperature: float = 1.0,
             seed: int | None = None) -> str | bytes:
        """One whole sample (``generate`` streams it instead)."""
        pieces = self.generate(length, start_text, argmax, temperature, seed)
        return (b"" if self.vocab.byte_mode else "").join(pieces)


def sample_from_model(model: "CharRNN", vocab: Vocabulary, length: int = 200, temperature: float = 1.0,
                      seed: int | None = None) -> str | bytes:
    """A sample from a model in any mode or device, leaving it (and torch's random state) untouched."""
    from .fastsample import numpy_weights

    return Sampler.from_weights(model.config, numpy_weights(model), vocab).text(length, temperature=temperature, seed=seed)


def sample(checkpoint: str | Path, length: int = 2000, start_text: str = "", argmax: bool = False,
           temperature: float = 1.0, seed: int | None = None, gpu: int | None = -1) -> str | bytes:
    """Sample text from a checkpoint and return it whole (the CLI streams instead)."""
    return Sampler.from_checkpoint(checkpoint, gpu=gpu).text(length, start_text, argmax, temperature, seed)
