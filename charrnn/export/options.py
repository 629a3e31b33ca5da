"""Every option of ``charrnn export``, defined once (no torch needed); the command line builds its flags from them."""

from __future__ import annotations

from dataclasses import dataclass

from ..options import option

FORMATS = ("html", "onnx")
WEIGHT_TYPES = ("fp32", "fp16")


@dataclass
class ExportOptions:
    """The options of ``charrnn export`` (the arguments of :func:`charrnn.export.export`)."""

    checkpoint: str = option("", "A .pt or .t7 checkpoint, or a directory (its newest run's best checkpoint).",
                             kind="path")
    output: str = option("", "The file to write.", kind="file", short="-o")
    format: str = option("html", "html: one page that samples in any browser, offline; onnx: one recurrent step.",
                         choices=FORMATS)
    weights: str = option("fp32", "How the page stores the weights (fp16 halves the file; it computes in fp32).",
                          choices=WEIGHT_TYPES)
    overwrite: bool = option(False, "Replace an existing output file.", kind="flag")
