"""Sampling text from a trained model, streamed as it is generated, in constant memory.

Entry points, by what you hold and what you want back:

- ``charrnn.sample(checkpoint, ...)``: a checkpoint in, the whole text out.
- ``Sampler.from_checkpoint(path)`` then ``.generate(...)`` (pieces as they are produced),
  ``.complete(...)`` (the whole text) or ``.generate_many(n, ...)`` (n samples as one batch).
- ``sample_from_model(model, vocab, ...)``: a live PyTorch model (samples during training).
- :class:`StopMatcher`: ends a stream before the first stop string (the CLI and the server).

On the CPU the work runs on :class:`charrnn.sampling.engine.Engine` (numba or NumPy); a ``.pt``
checkpoint sampled on the CPU never imports torch. On a GPU the PyTorch model computes the
scores and the engine's own sampling rule and random stream pick the tokens, so a seed means the
same thing everywhere. Row ``j`` of ``generate_many(n, seed=s)`` is the text of ``seed=s + j``.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np

from ..checkpoint import load_checkpoint, resolve_checkpoint
from ..config import ModelConfig
from .engine import BACKEND_ENV, Engine, PreparedModel, SamplingParams, numpy_weights, sample_rows, seed_key, uniforms
from ..errors import InvalidInput
from ..vocab import Vocabulary

if TYPE_CHECKING:
    import torch

    from ..model import CharRNN

MAX_STOPS = 4
SMALL_JOB = 20_000  # characters: below this, NumPy is done before numba would have loaded (about 1-2 s)


class StopMatcher:
    """Cuts a stream of text (or bytes) before the first occurrence of any stop string.

    ``push(piece)`` returns what may be emitted now; a tail that could begin a stop string is held
    back until it is decided. ``stopped`` turns true when a stop string was found (nothing after
    it is ever emitted); ``flush()`` returns the held-back tail at the end of the stream.
    """

    def __init__(self, stops: Sequence[str | bytes] = ()) -> None:
        stops = list(stops)
        if len(stops) > MAX_STOPS:
            raise InvalidInput("stop", f"takes at most {MAX_STOPS} strings (got {len(stops)})")
        if any(len(s) == 0 for s in stops):
            raise InvalidInput("stop", "strings must not be empty")
        self.stops, self.stopped = stops, False
        self.hold = max((len(s) for s in stops), default=1) - 1
        self.pending: str | bytes = ""

    def push(self, piece: str | bytes) -> str | bytes:
        """What of ``pending + piece`` can be emitted now."""
        text = self.pending + piece if self.pending else piece
        if self.stopped:
            return piece[:0]
        cut = min((i for i in (text.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped, self.pending = True, text[:0]
            return text[:cut]
        keep = min(self.hold, len(text))
        self.pending = text[len(text) - keep:]
        return text[:len(text) - keep]

    def flush(self) -> str | bytes:
        """The held-back tail once the stream has ended without a stop."""
        out, self.pending = self.pending, self.pending[:0]
        return out


def sampling_params(argmax: bool = False, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                    seed: int | None = None) -> SamplingParams:
    """The engine's parameters for the CLI-style arguments (``argmax`` or temperature 0: greedy)."""
    return SamplingParams(0.0 if argmax else temperature, top_k, top_p, seed).check()


class Sampler:
    """Generates text from a model; ``Sampler.from_checkpoint(path).generate(...)``.

    ``backend``: ``auto`` (numba when installed, else NumPy; NumPy for jobs under
    :data:`SMALL_JOB` characters while numba is not yet loaded, since both give the same text;
    the torch model on a GPU), ``numba``, ``numpy`` or ``torch`` (the PyTorch model computes
    the scores, on any device).
    """

    def __init__(self, model: "CharRNN", vocab: Vocabulary, device: "torch.device | str" = "cpu",
                 backend: str = "auto") -> None:
        import torch

        self.model = model.to(device).eval()
        self.config, self.vocab = model.config, vocab
        self.device = torch.device(device)
        self.device_type = self.device.type
        self.backend = "torch" if self.device_type != "cpu" else backend
        self._prepared = None

    @classmethod
    def from_weights(cls, config: ModelConfig, weights: dict, vocab: Vocabulary, backend: str = "auto") -> "Sampler":
        """A CPU sampler over NumPy weights (a ``state_dict`` as arrays), without torch."""
        self = cls.__new__(cls)
        self.model, self.device, self.device_type = None, None, "cpu"
        self.config, self.vocab, self.backend = config, vocab, backend
        self._prepared = PreparedModel(config, weights)
        return self

    @classmethod
    def from_checkpoint(cls, path: str | Path, gpu: int | None = -1, gpu_backend: str = "cuda",
                        backend: str = "auto") -> "Sampler":
        resolved = resolve_checkpoint(path)
        if gpu is not None and gpu < 0 and resolved.suffix == ".pt" and backend != "torch":
            from ..checkpoint.io import read_pt
            payload = read_pt(resolved)
            return cls.from_weights(payload.config, payload.model_state, payload.vocab, backend)
        from ..device import select_device
        device = select_device(gpu, gpu_backend)
        ckpt = load_checkpoint(resolved)
        return cls(ckpt.build_model(device), ckpt.vocab, device, backend)

    # -- checks and pieces -------------------------------------------------------------------------
    def _start(self, length: int, start_text: str) -> np.ndarray | None:
        if length < 1:
            raise InvalidInput("length", f"must be positive (got {length})")
        start = self.vocab.encode(start_text) - 1 if start_text else None  # 0-based for the model
        if start is not None and len(start) > length:
            raise InvalidInput("length", f"{length} is shorter than the start text ({len(start)} tokens)")
        return start

    def _engine(self, capacity: int, chars: int) -> Engine:
        """An engine for a job of ``chars`` characters: ``auto`` keeps small jobs on NumPy unless numba is loaded."""
        if self._prepared is None:
            self._prepared = PreparedModel(self.config, numpy_weights(self.model))
        backend = self.backend
        if backend == "auto" and chars < SMALL_JOB and "numba" not in sys.modules and not os.environ.get(BACKEND_ENV):
            backend = "numpy"
        return Engine(self.config, self._prepared, capacity, backend)

    def _decode(self, ids: np.ndarray) -> str | bytes:
        """Text (or bytes) for 0-based token ids."""
        return self.vocab.decode(np.asarray(ids) + 1)

    def _empty(self) -> str | bytes:
        return b"" if self.vocab.byte_mode else ""

    def _encode_stops(self, stop: Sequence[str]) -> list:
        return [s.encode("utf-8") if self.vocab.byte_mode and isinstance(s, str) else s for s in stop]

    # -- public ------------------------------------------------------------------------------------
    def generate(self, length: int = 2000, start_text: str = "", argmax: bool = False, temperature: float = 1.0,
                 seed: int | None = None, chunk: int = 256, top_k: int = 0, top_p: float = 1.0,
                 stop: Sequence[str] = ()) -> Iterator[str | bytes]:
        """Yield up to ``length`` characters (start text included) in pieces of about ``chunk``.

        Without start text the first character is drawn uniformly (argmax takes the first token),
        as torch-rnn does. A stop string ends the text just before it (searched in the generated
        part only). In bytes mode the pieces are bytes.
        """
        params = sampling_params(argmax, temperature, top_k, top_p, seed)
        start = self._start(length, start_text)
        matcher = StopMatcher(self._encode_stops(stop))
        if start is not None:
            yield self._decode(start)
        remaining = length - (0 if start is None else len(start))
        for ids in self._token_pieces(remaining, start, params, chunk):
            piece = matcher.push(self._decode(ids))
            if piece:
                yield piece
            if matcher.stopped:
                return
        tail = matcher.flush()
        if tail:
            yield tail

    def _token_pieces(self, remaining: int, start, params: SamplingParams, chunk: int) -> Iterator[np.ndarray]:
        if self.backend == "torch":
            for block in self._torch_rows(1, remaining, start, [params], chunk):
                yield block[0]
            return
        engine = self._engine(1, remaining)
        slot = engine.open(params)
        head = np.empty(0, np.int64)
        if start is None:  # the first token rides with the first piece
            head = engine.first([slot])
            engine.feed([slot], head)
            remaining -= 1
        else:
            engine.prime(slot, start)
        while remaining > 0 or len(head):
            n = min(chunk - len(head), remaining)
            yield np.concatenate([head, engine.generate([slot], n)[0]])
            head, remaining = head[:0], remaining - n

    def complete(self, length: int = 2000, start_text: str = "", argmax: bool = False, temperature: float = 1.0,
                 seed: int | None = None, top_k: int = 0, top_p: float = 1.0, stop: Sequence[str] = ()) -> str | bytes:
        """One whole sample (``generate`` streams it instead)."""
        pieces = self.generate(length, start_text, argmax, temperature, seed, top_k=top_k, top_p=top_p, stop=stop)
        return self._empty().join(pieces)

    def generate_many(self, num_samples: int, length: int = 2000, start_text: str = "", argmax: bool = False,
                      temperature: float = 1.0, seed: int | None = None, top_k: int = 0, top_p: float = 1.0,
                      stop: Sequence[str] = ()) -> list[str | bytes]:
        """``num_samples`` independent samples computed together as one batch; row j uses seed + j."""
        if num_samples < 1:
            raise InvalidInput("num_samples", f"must be positive (got {num_samples})")
        start = self._start(length, start_text)
        params = [sampling_params(argmax, temperature, top_k, top_p, None if seed is None else seed + j)
                  for j in range(num_samples)]
        stops = self._encode_stops(stop)
        StopMatcher(stops)  # validates
        remaining = length - (0 if start is None else len(start))
        if self.backend == "torch":
            rows = np.concatenate(list(self._torch_rows(num_samples, remaining, start, params, remaining)), axis=1)
        else:
            rows = self._engine_rows(num_samples, remaining, start, params)
        prefix = self._empty() if start is None else self._decode(start)
        out = []
        for row in rows:
            matcher = StopMatcher(stops)
            body = matcher.push(self._decode(row))
            out.append(prefix + body + (matcher.flush() or self._empty()))
        return out

    def _engine_rows(self, n: int, remaining: int, start, params: list[SamplingParams]) -> np.ndarray:
        engine = self._engine(n, n * remaining)
        slots = np.array([engine.open(p) for p in params])
        if start is None:
            first = engine.first(slots)
            engine.feed(slots, first)
            return np.concatenate([first[:, None], engine.generate(slots, remaining - 1)], axis=1)
        engine.prime(slots[0], start)  # prime once, copy the state
        for s in slots[1:]:
            engine.copy_state(slots[0], s)
        return engine.generate(slots, remaining)

    # -- the PyTorch path (GPUs) -------------------------------------------------------------------
    def _torch_rows(self, n: int, remaining: int, start, params: list[SamplingParams],
                    chunk: int) -> Iterator[np.ndarray]:
        """Blocks of (n, <= chunk) tokens: the model computes the scores, the engine's rule picks."""
        import torch

        temp = np.array([p.temperature for p in params])
        top_k = np.array([p.top_k for p in params], dtype=np.int64)
        top_p = np.array([p.top_p for p in params])
        keys = np.array([seed_key(p.seed if p.seed is not None else secrets.randbits(64))
                         for p in params], dtype=np.uint64)
        from ..precision import exact_fp32

        count = np.zeros(n, np.uint64)
        with torch.inference_mode(), exact_fp32(self.device):  # TF32 would make the text part from the engine's
            state, done = None, 0
            if start is None:
                u = uniforms(keys, count)
                count += np.uint64(1)
                nxt = np.minimum((u * len(self.vocab)).astype(np.int64), len(self.vocab) - 1)
                nxt[temp == 0] = 0
                scores, state = self.model(torch.as_tensor(nxt, device=self.device).view(n, 1))
                yield nxt[:, None]
                done = 1
            else:
                prompt = torch.as_tensor(start, device=self.device).view(1, -1).expand(n, -1)
                scores, state = self.model(prompt)
            block = []
            for t in range(done, remaining):
                logits = scores[:, -1].float().cpu().numpy()
                nxt = sample_rows(logits, temp, top_k, top_p, uniforms(keys, count))
                count += np.uint64(1)
                block.append(nxt)
                if len(block) == chunk:
                    yield np.stack(block, axis=1)
                    block = []
                if t + 1 < remaining:
                    scores, state = self.model(torch.as_tensor(nxt, device=self.device).view(n, 1), state)
            if block:
                yield np.stack(block, axis=1)


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
