"""``charrnn export``: a trained model as one self-contained HTML page, or as an ONNX step graph.

The page carries the vocabulary, the prepared weights and a JavaScript port of the sampling
engine (:mod:`charrnn.sampling.engine`), so it samples the same text for a seed with no server
and no network. The ONNX file holds one recurrent step, for any runtime that reads ONNX.
"""

from .model import ExportModel, load_export_model
from .write import FORMATS, WEIGHT_TYPES, export

__all__ = ["ExportModel", "FORMATS", "WEIGHT_TYPES", "export", "load_export_model"]
