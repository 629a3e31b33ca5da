"""Training precision: which one ``--precision`` means here, and the bf16 LSTM layer behind it.

``auto`` is bf16 (fp32 master weights, fp32 optimizer) where bf16 is native: CPUs with AMX or
AVX512-BF16, CUDA devices of compute capability 8.0 and up; fp32 elsewhere. ``fp32`` is plain
PyTorch, bit for bit. Under bf16 on a CPU an LSTM runs oneDNN's fused bf16 RNN directly
(:class:`BF16LSTMLayer`): one cast of each weight per step and fp32 gradients straight back,
instead of autocast's casts around every call.

On a GPU autocast covers the output layer and the loss only: the recurrent layers run in fp32
(:mod:`charrnn.model`), and the carried state is fp32 everywhere. fp16 trains with a
:class:`torch.amp.GradScaler` (:func:`grad_scaler`), whose state checkpoints keep.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from functools import lru_cache

import torch

from .config import PRECISIONS  # noqa: F401  (re-exported; the list lives where the CLI can read it without torch)
from .errors import InvalidInput, opt
from .hardware import cpu_info

LSTM_MODE = 2  # the RNN mode number PyTorch's kernels use for an LSTM


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` multiplies bf16 matrices in hardware (read from its feature flags)."""
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device) >= (8, 0)
    if device.type == "cpu":
        return cpu_info().native_bf16 and torch.backends.mkldnn.is_available()
    return False


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``--precision`` on ``device`` (None = plain fp32)."""
    if precision == "fp32":
        return None
    if precision == "auto":
        return torch.bfloat16 if native_bf16(device) else None
    if precision == "bf16" and device.type == "cuda" and not native_bf16(device):
        major, minor = torch.cuda.get_device_capability(device)
        raise InvalidInput("precision", f"bf16 needs a GPU of compute capability 8.0 or newer (this one is "
                                        f"{major}.{minor}); use {opt('precision')} fp32 or fp16")
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def recorded_precision(options: dict, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for the ``precision`` a checkpoint's options record (fp32 when absent or unknown:
    the value comes from a file)."""
    stored = options.get("precision") if isinstance(options, dict) else None
    if stored == "bf16" and device.type == "cuda" and not native_bf16(device):
        stored = "auto"  # evaluating a bf16 run on an older GPU: fp32 rather than a refusal
    return resolve_precision(stored if isinstance(stored, str) and stored in PRECISIONS else "fp32", device)


def describe_precision(precision: str, dtype: torch.dtype | None, device: torch.device) -> str:
    """For the start line: ``bf16 autocast (auto: native bf16 on this CPU)``, ``fp32``, ..."""
    name = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, str(dtype).replace("torch.", ""))
    chosen = "fp32" if dtype is None else f"{name} autocast"
    if dtype is torch.float16 or (dtype is not None and device.type != "cpu"):  # see charrnn.model
        chosen = f"{name} output layer, fp32 recurrent layers"
    if dtype is torch.float16:
        chosen += " with loss scaling"
    if precision != "auto":
        return chosen
    where = "GPU" if device.type == "cuda" else device.type.upper()
    return f"{chosen} (auto: {'native' if dtype else 'no native'} bf16 on this {where})"


def autocast(device: torch.device, dtype: torch.dtype | None):
    """The context the forward pass runs in (nothing at all for fp32)."""
    if dtype is None:
        return nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def grad_scaler(device: torch.device, dtype: torch.dtype | None) -> "torch.amp.GradScaler | None":
    """The loss scaler fp16 training needs (its gradients underflow without one); None otherwise."""
    if dtype is not torch.float16:
        return None
    return torch.amp.GradScaler(device.type)


@contextmanager
def exact_fp32(device: torch.device):
    """IEEE fp32 matrix products on a GPU (TF32 off in cuDNN and cuBLAS), for sampling that
    should follow the CPU engine's text: TF32 changes logits by about 1e-3 relative."""
    if device.type != "cuda":
        yield
        return
    matmul = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul


def bf16_lstm_active(device: torch.device) -> bool:
    """True inside a CPU bf16 autocast region on a CPU whose oneDNN runs bf16 RNNs natively.

    Elsewhere (an AVX2-only CPU asked for ``--precision bf16``) plain autocast does the work.
    """
    return (device.type == "cpu" and torch.is_autocast_enabled("cpu")
            and torch.get_autocast_dtype("cpu") == torch.bfloat16 and native_bf16(device) and _onednn_bf16())


@lru_cache(maxsize=None)
def _onednn_bf16() -> bool:
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        return bool(check and check())
    except RuntimeError:
        return False


class BF16LSTMLayer(torch.autograd.Function):
    """One LSTM layer in oneDNN's fused bf16 kernel, time-major.

    ``x`` (T, N, D) in any float dtype; ``h0``, ``c0`` (N, H) fp32; fp32 weights in PyTorch's
    layout. Returns the outputs (T, N, H) in bf16 and the final state in fp32 (the cell state is
    fp32 throughout); weight gradients come back in fp32. ``train=False`` (no gradients wanted)
    skips the workspace the backward pass needs.
    """

    @staticmethod
    def forward(ctx, x, h0, c0, w_ih, w_hh, b_ih, b_hh, train: bool = True):
        weights = [w.to(torch.bfloat16) for w in (w_ih, w_hh, b_ih, b_hh)]
        xb, h0b = x.to(torch.bfloat16), h0.to(torch.bfloat16)
        c0f = c0.float()  # the cell state stays fp32 through the kernel and across batches
        hidden = w_hh.shape[1]
        with torch.enable_grad():  # the kernel returns its workspace only with grad mode on
            y, hy, cy, workspace = torch.ops.aten.mkldnn_rnn_layer(
                xb, *weights, h0b, c0f, False, [], LSTM_MODE, hidden, 1, True, False, False, train)
        if train:
            ctx.set_materialize_grads(False)  # unused outputs (often hy, cy) get no zero gradients
            ctx.input_dtype = x.dtype
            ctx.save_for_backward(xb, *weights, h0b, c0f, y, hy, cy, workspace)
        return y, hy.float(), cy

    @staticmethod
    def backward(ctx, grad_y, grad_hy, grad_cy):
        x, w_ih, w_hh, b_ih, b_hh, h0, c0, y, hy, cy, workspace = ctx.saved_tensors
        grads = torch.ops.aten.mkldnn_rnn_layer_backward(
            x, w_ih, w_hh, b_ih, b_hh, h0, c0, y, hy, cy, _bf16(grad_y), _bf16(grad_hy), grad_cy,
            False, LSTM_MODE, w_hh.shape[1], 1, True, True, False, [], False, workspace)
        dx, dw_ih, dw_hh, db_ih, db_hh, dh0, dc0 = grads
        return dx.to(ctx.input_dtype), dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, None


def _bf16(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.to(torch.bfloat16)
