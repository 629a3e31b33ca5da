"""``charrnn export``: a trained model as one self-contained HTML page, or as an ONNX step graph.

The page carries the vocabulary, the prepared weights and a JavaScript port of the sampling
engine (:mod:`charrnn.sampling.engine`), so it samples the same text for a seed with no server
and no network. The ONNX file holds one recurrent step, for any runtime that reads ONNX.
"""

from importlib import import_module

_API = {"ExportModel": "model", "load_export_model": "model", "export": "write", "FORMATS": "options",
        "WEIGHT_TYPES": "options", "ExportOptions": "options"}

__all__ = sorted(_API)


def __getattr__(name: str):
    # lazy, so that the CLI reads the option definitions without loading the engine
    if name in _API:
        return getattr(import_module(f".{_API[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
