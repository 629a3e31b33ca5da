"""Sampling text from a trained model, streamed as it is generated, in constant memory.

Entry points, by what you hold and what you want back:

- ``charrnn.sample(checkpoint, ...)``: a checkpoint in, the whole text out.
- ``Sampler.from_checkpoint(path)`` then ``.generate(...)`` (pieces as they are produced),
  ``.complete(...)`` (the whole text) or ``.generate_many(n, ...)`` (n samples as one batch).
- ``sample_from_model(model, vocab, ...)``: a live PyTorch model (samples during training).
- :class:`StopMatcher`: ends a stream before the first stop string (the CLI and the server).

Every way runs the one decode loop (:mod:`charrnn.sampling.decode`). On the CPU the scores come
from :class:`charrnn.sampling.engine.Engine` (numba or NumPy) and a checkpoint (``.pt`` or ``.t7``)
is read without importing torch. On a GPU the PyTorch model computes the scores
(:class:`charrnn.sampling.torch_scorer.TorchScorer`) and the engine's own sampling rule and random
stream pick the tokens, so a seed means the same thing everywhere. Row ``j`` of ``generate_many(n, seed=s)`` is the text of ``seed=s + j``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np

from ..checkpoint import load_checkpoint, read_payload, resolve_checkpoint
from ..config import ModelConfig
from .decode import MAX_STOPS, Decoder, StopMatcher  # noqa: F401 (StopMatcher: part of this module's API)
from .engine import BACKEND_ENV, Engine, PreparedModel, SamplingParams, numpy_weights
from ..errors import InvalidInput
from .options import LENGTH, NUM_SAMPLES, check_range, check_text, row_seed
from ..vocab import Vocabulary

if TYPE_CHECKING:
    import torch

    from ..model import CharRNN

SMALL_JOB = 20_000  # characters: below this, NumPy is done before numba would have loaded (about 1-2 s)


def sampling_params(argmax: bool = False, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                    seed: int | None = None) -> SamplingParams:
    """The engine's parameters for the CLI-style arguments (``argmax`` or temperature 0: greedy)."""
    return SamplingParams(0.0 if argmax else temperature, top_k, top_p, seed).check()


class Sampler:
    """Generates text from a model; ``Sampler.from_checkpoint(path).generate(...)``.

    Built from a PyTorch ``model`` or from NumPy ``weights`` (with their ``config``; no torch).
    ``backend``: ``auto`` (numba when it loads, else NumPy; NumPy for jobs under
    :data:`SMALL_JOB` characters while numba is not yet loaded, since both give the same text;
    the torch model on a GPU), ``numba``, ``numpy`` or ``torch`` (the PyTorch model computes
    the scores, on any device). Every way runs the one decode loop of :mod:`.decode`.
    """

    def __init__(self, model: "CharRNN | None", vocab: Vocabulary, device: "torch.device | str" = "cpu",
                 backend: str = "auto", *, config: ModelConfig | None = None, weights: dict | None = None) -> None:
        if model is None and (config is None or weights is None):
            raise InvalidInput("model", "needs a model, or a config and its weights")
        self.vocab, self.model, self.device = vocab, model, device
        self.config = model.config if model is not None else config
        self._prepared = None if weights is None else PreparedModel(self.config, weights)
        self.backend = backend
        if model is not None:
            import torch

            self.device = torch.device(device)
            self.model = model.to(self.device).eval()
            if self.device.type != "cpu":
                self.backend = "torch"

    @classmethod
    def from_weights(cls, config: ModelConfig, weights: dict, vocab: Vocabulary, backend: str = "auto") -> "Sampler":
        """A CPU sampler over NumPy weights (a ``state_dict`` as arrays), without torch."""
        return cls(None, vocab, backend=backend, config=config, weights=weights)

    @classmethod
    def from_checkpoint(cls, path: str | Path, gpu: int | None = -1, gpu_backend: str = "cuda",
                        backend: str = "auto") -> "Sampler":
        """A sampler for a ``.pt`` or torch-rnn ``.t7`` checkpoint; on the CPU, read without torch."""
        resolved = resolve_checkpoint(path)
        if gpu is not None and gpu < 0 and backend != "torch":
            payload = read_payload(resolved)
            return cls.from_weights(payload.config, payload.model_state, payload.vocab, backend)
        from ..device import select_device
        device = select_device(gpu, gpu_backend)
        ckpt = load_checkpoint(resolved)
        return cls(ckpt.build_model(device), ckpt.vocab, device, backend)

    # -- checks and the decode loop ----------------------------------------------------------------
    def _start(self, length: int, start_text: str) -> np.ndarray:
        check_range("length", length, LENGTH, integer=True)
        start_text = check_text("start_text", start_text or "")
        if len(start_text) > length:
            raise InvalidInput("length", f"{length} is shorter than the start text ({len(start_text)} characters)")
        return self.vocab.encode(start_text) - 1 if start_text else np.zeros(0, np.int64)  # 0-based

    def decoder(self, capacity: int, chars: int, text: bool = False) -> Decoder:
        """The decode loop over a scorer for ``capacity`` rows and a job of about ``chars`` characters.

        ``auto`` keeps small jobs on NumPy while numba is not loaded (the same text, no start-up wait).
        """
        # a word vocabulary's tokens hold several characters: the loop counts characters
        chars_of = None if self.vocab.plain else self.vocab.char_lengths()[1:]
        if self.backend == "torch":
            from .torch_scorer import TorchScorer
            return Decoder(TorchScorer(self.model, capacity, self.device), self.vocab, text, chars_of)
        if self._prepared is None:
            self._prepared = PreparedModel(self.config, numpy_weights(self.model))
        backend = self.backend
        if backend == "auto" and chars < SMALL_JOB and "numba" not in sys.modules and not os.environ.get(BACKEND_ENV):
            backend = "numpy"
        return Decoder(Engine(self.config, self._prepared, capacity, backend), self.vocab, text, chars_of)

    def _decode(self, ids: np.ndarray) -> str | bytes:
        """Text (or bytes) for 0-based token ids."""
        return self.vocab.decode(np.asarray(ids) + 1)

    def _empty(self) -> str | bytes:
        return b"" if self.vocab.byte_mode else ""

    def _encode_stops(self, stop: Sequence[str]) -> list:
        stops = [s.encode("utf-8") if self.vocab.byte_mode and isinstance(s, str) else s for s in stop]
        StopMatcher(stops)  # validates before any work
        return stops

    # -- public ------------------------------------------------------------------------------------
    def generate(self, length: int = 2000, start_text: str = "", argmax: bool = False, temperature: float = 1.0,
                 seed: int | None = None, chunk: int = 256, top_k: int = 0, top_p: float = 1.0,
                 stop: Sequence[str] = ()) -> Iterator[str | bytes]:
        """Yield up to ``length`` characters (start text included) in pieces of about ``chunk`` tokens.

        Without start text the first character is drawn uniformly (argmax takes the first token),
        as torch-rnn does. A stop string ends the text just before it (searched in the generated
        part only). In bytes mode the pieces are bytes.
        """
        params = sampling_params(argmax, temperature, top_k, top_p, seed)
        start = self._start(length, start_text)
        stops = self._encode_stops(stop)
        prefix = self._decode(start)
        if len(prefix):
            yield prefix
        if len(prefix) == length:
            return
        decoder = self.decoder(1, length - len(prefix))
        [row] = decoder.add(start, [params], length - len(prefix), stops)
        decoder.prime()
        while not row.done:
            decoder.step(chunk)
            piece, _ = decoder.take(row)
            if piece:
                yield piece

    def complete(self, length: int = 2000, start_text: str = "", argmax: bool = False, temperature: float = 1.0,
                 seed: int | None = None, top_k: int = 0, top_p: float = 1.0, stop: Sequence[str] = ()) -> str | bytes:
        """One whole sample (``generate`` streams it instead)."""
        pieces = self.generate(length, start_text, argmax, temperature, seed, top_k=top_k, top_p=top_p, stop=stop)
        return self._empty().join(pieces)

    def generate_many(self, num_samples: int, length: int = 2000, start_text: str = "", argmax: bool = False,
                      temperature: float = 1.0, seed: int | None = None, top_k: int = 0, top_p: float = 1.0,
                      stop: Sequence[str] = ()) -> list[str | bytes]:
        """``num_samples`` independent samples computed together as one batch; row j uses seed + j."""
        check_range("num_samples", num_samples, NUM_SAMPLES, integer=True)
        start = self._start(length, start_text)
        params = [sampling_params(argmax, temperature, top_k, top_p, row_seed(seed, j)) for j in range(num_samples)]
        stops = self._encode_stops(stop)
        prefix = self._decode(start)
        remaining = length - len(prefix)
        if not remaining:
            return [prefix] * num_samples
        decoder = self.decoder(num_samples, num_samples * remaining)
        rows = decoder.add(start, params, remaining, stops)
        decoder.prime()  # one row reads the start text, the others copy its state
        while decoder.running():
            decoder.step(remaining)
        return [prefix + decoder.take(row)[0] for row in rows]


def sample_from_model(model: "CharRNN", vocab: Vocabulary, length: int = 200, temperature: float = 1.0,
                      seed: int | None = None, top_k: int = 0, top_p: float = 1.0) -> str | bytes:
    """A sample from a live PyTorch model (any mode, any device), leaving it and torch's random state untouched."""
    sampler = Sampler.from_weights(model.config, numpy_weights(model), vocab)
    return sampler.complete(length, temperature=temperature, seed=seed, top_k=top_k, top_p=top_p)


def sample(checkpoint: str | Path, length: int = 2000, start_text: str = "", argmax: bool = False,
           temperature: float = 1.0, seed: int | None = None, gpu: int | None = -1, top_k: int = 0,
           top_p: float = 1.0, stop: Sequence[str] = ()) -> str | bytes:
    """Sample text from a checkpoint and return it whole (the CLI streams instead)."""
    sampler = Sampler.from_checkpoint(checkpoint, gpu=gpu)
    return sampler.complete(length, start_text, argmax, temperature, seed, top_k, top_p, stop)
