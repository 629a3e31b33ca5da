"""The one-file HTML page: the serve page's look, the model inline, the engine in a Web Worker."""

from __future__ import annotations

import base64
import json
from importlib import resources

import numpy as np

from .model import ExportModel

# The PreparedModel arrays the page's engine reads, in this order inside one blob.
ARRAYS = ("table0", "whh0", "wcat", "bias", "whh", "bhh", "wih", "bih", "head_w", "head_b")


def _static(name: str) -> str:
    return resources.files("charrnn.export").joinpath("static", name).read_text(encoding="utf-8")


def _serve_style() -> str:
    return resources.files("charrnn.serve").joinpath("static", "style.css").read_text(encoding="utf-8")


def weight_blob(model: ExportModel, dtype: str = "fp32") -> tuple[dict, bytes]:
    """The prepared arrays as one little-endian blob (float32, or float16 computed in float32) and its manifest."""
    np_dtype = np.dtype("<f2" if dtype == "fp16" else "<f4")
    m, parts, arrays, offset = model.prepared, [], {}, 0
    for name in ARRAYS:
        a = np.ascontiguousarray(getattr(m, name), dtype=np_dtype).ravel()
        arrays[name] = {"offset": offset, "size": int(a.size)}
        parts.append(a.tobytes())
        offset += a.size
    manifest = {"dtype": "float16" if dtype == "fp16" else "float32", "arrays": arrays,
                "model": {"kind": m.kind, "H": m.H, "L": m.L, "G": m.G, "vocab_size": m.vocab_size}}
    return manifest, b"".join(parts)


def _script_json(data: object) -> str:
    """JSON that is safe inside a <script> element (no "</" can end it early)."""
    return json.dumps(data, ensure_ascii=True, separators=(",", ":")).replace("</", "<\\/")


def render_page(model: ExportModel, weights: str = "fp32") -> str:
    """The whole page as text."""
    manifest, blob = weight_blob(model, weights)
    data = {"info": model.info(), "weights": manifest,
            "vocab": {"tokens": list(model.vocab.tokens), "byte_mode": model.vocab.byte_mode}}
    title = model.name.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    parts = {"@@STYLE@@": _serve_style(), "@@MODEL@@": _script_json(data),
             "@@WEIGHTS@@": base64.b64encode(blob).decode("ascii"), "@@ENGINE@@": _static("engine.js"),
             "@@PAGE@@": _static("page.js"), "@@TITLE@@": title}
    page = _static("page.html")
    for marker in ("@@STYLE@@", "@@ENGINE@@", "@@PAGE@@", "@@TITLE@@", "@@MODEL@@", "@@WEIGHTS@@"):
        page = page.replace(marker, parts[marker])  # the model and weights last: nothing is searched inside them
    return page


def rounded(prepared, dtype: str = "fp16"):
    """A copy of the prepared model with every array rounded as the page stores it (its arithmetic stays float32)."""
    import copy

    out = copy.copy(prepared)
    if dtype == "fp16":
        for name in ARRAYS:
            setattr(out, name, np.ascontiguousarray(getattr(prepared, name).astype(np.float16).astype(np.float32)))
    return out


def text_loss(prepared, tokens: np.ndarray, fp16: bool = False) -> float:
    """Mean cross-entropy (nats/char) of predicting each of ``tokens`` (0-based) from the ones before it,
    with the page's weights (``fp16``: as ``--weights fp16`` stores them); the check behind ``--weights fp16``."""
    from ..sampling.engine import Engine, SamplingParams

    model = rounded(prepared) if fp16 else prepared
    engine = Engine(None, model, 1, "numpy")
    slot = engine.open(SamplingParams(seed=0))
    total = 0.0
    for prev, nxt in zip(tokens[:-1], tokens[1:]):
        engine.feed([slot], [prev])
        engine.sample([slot])  # the NumPy backend leaves this step's scores in engine.scores
        z = engine.scores[slot].astype(np.float64)
        z -= z.max()
        total -= z[int(nxt)] - np.log(np.exp(z).sum())
    return total / max(1, len(tokens) - 1)
