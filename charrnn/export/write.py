"""``export(checkpoint, output, format)``: read safely, render, write atomically (never clobbering)."""

from __future__ import annotations

from pathlib import Path

from ..errors import InvalidInput, opt
from ..fileio import atomic_write
from .model import load_export_model
from .options import FORMATS, WEIGHT_TYPES



def export(checkpoint: str | Path, output: str | Path, format: str = "html", weights: str = "fp32",
           overwrite: bool = False) -> Path:
    """Write ``checkpoint`` as a page (``html``) or an ONNX step graph (``onnx``) to ``output``; return its path."""
    if format not in FORMATS:
        raise InvalidInput("format", f"must be one of {', '.join(FORMATS)} (got {format!r})")
    if weights not in WEIGHT_TYPES:
        raise InvalidInput("weights", f"must be one of {', '.join(WEIGHT_TYPES)} (got {weights!r})")
    if format == "onnx" and weights != "fp32":
        raise InvalidInput("weights", f"fp16 is for {opt('format')} html (the ONNX graph is float32)")
    output = Path(output)
    if output.is_dir():
        raise InvalidInput("output", f"is a directory: {output}")
    if (output.exists() or output.is_symlink()) and not overwrite:
        raise InvalidInput("overwrite", f"is needed to replace the existing {output}")
    model = load_export_model(checkpoint)
    if format == "html":
        from .html import render_page
        data, mode = render_page(model, weights).encode("utf-8"), "wb"
    else:
        from .onnx import build_onnx
        data, mode = build_onnx(model), "wb"
    with atomic_write(output, mode) as f:
        f.write(data)
    return output
