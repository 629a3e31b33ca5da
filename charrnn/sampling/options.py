"""Every option of ``charrnn sample``, and the one range of each sampling field (no torch needed).

The command line builds its flags from :class:`SampleOptions` (``cli.options_of``); the engine's
:meth:`SamplingParams.check`, the :class:`~charrnn.sampling.sampler.Sampler` and the server's
request validation check the same fields against the same ranges below, so a value means the same
thing, and is refused with the same words, wherever it is given.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Sequence

from ..config import BACKENDS
from ..errors import InvalidInput
from ..options import GPU_HELP, NON_NEGATIVE, POSITIVE, Range, option

TEMPERATURE = Range(0, 10)        # 0 = argmax; beyond 10 every model is noise
TOP_K = NON_NEGATIVE              # 0 = off
TOP_P = Range(0, 1, low_open=True)  # 1 = off
SEED = Range(0, 2 ** 63 - 1)      # an int64: what every client (and JSON parser) can hold
LENGTH = POSITIVE                 # characters (the server's max_tokens)
NUM_SAMPLES = POSITIVE            # rows generated together (the server's n)
LOGPROBS = Range(0, 20)           # top-N alternatives reported per step (as OpenAI's API)
MAX_STOPS = 4
MAX_STOP_LENGTH = 100


@dataclass
class SampleOptions:
    """Every option of ``charrnn sample``; names and defaults follow torch-rnn's sample.lua."""

    checkpoint: str = option("", "A checkpoint file, or a directory (its newest run's best checkpoint).", kind="path")
    length: int = option(2000, "Characters, start text included.", range=LENGTH)
    start_text: str = option("", "Text the model reads first; the output begins with it.")
    sample: bool = option(True, "0 = argmax at every step.", kind="01")
    temperature: float = option(1.0, "Divides the scores before the softmax: lower is safer, higher is wilder; "
                                     "0 = argmax.", range=TEMPERATURE)
    top_k: int = option(0, "Draw only among the k most likely characters; 0 = all.", range=TOP_K)
    top_p: float = option(1.0, "Draw only among the most likely characters that together hold this probability.",
                          range=TOP_P)
    stop: tuple[str, ...] = option((), f"End the text just before this string (repeatable, up to {MAX_STOPS}).",
                                   kind="multiple")
    seed: int | None = option(None, "Make the sample reproducible (sample j of --num-samples uses seed + j).",
                              range=SEED)
    gpu: int = option(-1, GPU_HELP.split(";")[0] + ".")
    gpu_backend: str = option("cuda", "GPU backend.", choices=BACKENDS)
    num_samples: int = option(1, "Independent samples, generated together in one batch (separated by a blank line).",
                              range=NUM_SAMPLES)
    output: str | None = option(None, "Write to this file instead of stdout.", kind="file", short="-o")
    verbose: bool = option(False, "1 = report speed on stderr.", kind="01")
    documents: int | None = option(None, "Print N documents (model trained with preprocess --documents), one per "
                                         "line or block; --length then caps each one [default: 500] and "
                                         "--num-samples sets the batch.", range=POSITIVE)
    unique: bool = option(False, "With --documents: drop repeats.", kind="flag")
    novel: bool = option(False, "With --documents: drop documents of the training split.", kind="flag")
    input_h5: str | None = option(None, "With --novel: the training data [default: the checkpoint's].", kind="path")


def check_range(field: str, value, span: Range, integer: bool = False):
    """``value`` if it is a number of the right kind inside ``span``; else :class:`InvalidInput` naming ``field``."""
    kind = numbers.Integral if integer else numbers.Real
    if not isinstance(value, kind) or isinstance(value, bool):
        raise InvalidInput(field, f"must be {'an integer' if integer else 'a number'} (got {show_value(value)})")
    if isinstance(value, float) and not math.isfinite(value):  # (an int is finite, and may be too big for a float)
        raise InvalidInput(field, f"must be finite (got {value})")
    if value not in span:
        raise InvalidInput(field, span.problem(value))
    return value


def row_seed(seed: int | None, row: int) -> int | None:
    """The seed of row ``row`` of a batch seeded ``seed``: ``seed + row``, wrapped to stay a valid seed."""
    if seed is None:
        return None
    return (check_range("seed", seed, SEED, integer=True) + row) % (SEED.high + 1)


def check_text(field: str, text: str) -> str:
    """``text`` if it can be encoded: a lone surrogate (half of a UTF-16 pair) is not a character."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInput(field, f"holds a lone surrogate U+{ord(text[exc.start]):04X} at position {exc.start}, "
                                  "which is not a character") from None
    return text


def check_stops(stops: Sequence[str | bytes], field: str = "stop") -> list:
    """The stop strings as a list: at most :data:`MAX_STOPS`, each non-empty, short and encodable."""
    stops = list(stops)
    if len(stops) > MAX_STOPS:
        raise InvalidInput(field, f"may hold at most {MAX_STOPS} strings (got {len(stops)})")
    for s in stops:
        if not isinstance(s, (str, bytes)):
            raise InvalidInput(field, f"must be a string or a list of strings (got {show_value(s)})")
        if not s:
            raise InvalidInput(field, "strings must not be empty")
        if len(s) > MAX_STOP_LENGTH:
            raise InvalidInput(field, f"strings may be at most {MAX_STOP_LENGTH} characters long")
        if isinstance(s, str):
            check_text(field, s)
    return stops


def show_value(v) -> str:
    """A value as an error message quotes it: short, and printable whatever it holds."""
    text = repr(v) if not isinstance(v, str) else '"' + v + '"'
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= 40 else text[:37] + "..."
