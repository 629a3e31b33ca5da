"""Compile the engine's kernels into numba's cache now, so the first real sample does not wait for them.

    python -m charrnn.sampling.warm

The kernels' types do not depend on the model (cell type and sizes are arguments), so one tiny
model compiles every kernel a checkpoint will use: one row and many rows (the threaded kernels),
prompts, first tokens, logprobs and runs of steps. The Docker image runs this at build time.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from ..config import ModelConfig
from .decode import Decoder
from .engine import PARALLEL_MIN_ROWS, Engine, SamplingParams, numba_cache_dir


def tiny_weights(config: ModelConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """Random weights in the layout of a ``CharRNN`` ``state_dict`` (no torch needed)."""
    rng = np.random.default_rng(seed)
    V, D, H, G = config.vocab_size, config.wordvec_size, config.rnn_size, 4
    w = {"embed.weight": rng.normal(size=(V, D)), "head.weight": rng.normal(size=(V, H)) / H,
         "head.bias": np.zeros(V)}
    for l in range(config.num_layers):
        w[f"rnns.0.weight_ih_l{l}"] = rng.normal(size=(G * H, D if l == 0 else H)) / H
        w[f"rnns.0.weight_hh_l{l}"] = rng.normal(size=(G * H, H)) / H
        w[f"rnns.0.bias_ih_l{l}"] = np.zeros(G * H)
        w[f"rnns.0.bias_hh_l{l}"] = np.zeros(G * H)
    return {k: v.astype(np.float32) for k, v in w.items()}


def warm_up(backend: str = "numba") -> str:
    """Run every kernel once on a tiny model; returns the backend that ran."""
    from ..vocab import Vocabulary

    config = ModelConfig(8, "lstm", 4, 8, 2)
    engine = Engine(config, tiny_weights(config), PARALLEL_MIN_ROWS, backend)
    decoder = Decoder(engine, Vocabulary(tuple(range(97, 105))))
    for n in (1, PARALLEL_MIN_ROWS):
        for params, prompt in ((SamplingParams(logprobs=1), [1, 2]), (SamplingParams(), [])):
            rows = decoder.add(np.array(prompt, np.int64), [params] * n, 4)
            decoder.prime()
            while decoder.running():
                decoder.step(2)
            decoder.remove(rows)
    return engine.backend


def main() -> None:
    start = time.perf_counter()
    backend = warm_up()
    print(f"charrnn: {backend} sampling kernels ready in {time.perf_counter() - start:.1f} s "
          f"(cache: {numba_cache_dir()})", file=sys.stderr)


if __name__ == "__main__":
    main()
