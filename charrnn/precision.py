"""Training precision: which one ``--precision`` means here, and the bf16 LSTM layer behind it.

``auto`` is bf16 (fp32 master weights, fp32 optimizer) where bf16 is native: CPUs with AMX or
AVX512-BF16, CUDA devices of compute capability 8.0 and up; fp32 elsewhere. ``fp32`` is plain
PyTorch, bit for bit. Under bf16 on a CPU an LSTM runs oneDNN's fused bf16 RNN directly
(:class:`BF16LSTMLayer`): one cast of each weight per step and fp32 gradients straight back,
instead of autocast's casts around every call.
"""

from __future__ import annotations

from contextlib import nullcontext
from functools import lru_cache

import torch

from .config import PRECISIONS  # noqa: F401  (re-exported; the list lives where the CLI can read it without torch)
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
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def describe_precision(precision: str, dtype: torch.dtype | None, device: torch.device) -> str:
    """For the start line: ``bf16 autocast (auto: native bf16 on this CPU)``, ``fp32``, ..."""
    chosen = "fp32" if dtype is None else f"{str(dtype).replace('torch.', '').replace('bfloat', 'bf')} autocast"
    if precision != "auto":
        return chosen
    where = "GPU" if device.type == "cuda" else device.type.upper()
    return f"{chosen} (auto: {'native' if dtype else 'no native'} bf16 on this {where})"


def autocast(device: torch.device, dtype: torch.dtype | None):
    """The context the forward pass runs in (nothing at all for fp32)."""
    if dtype is None:
        return nullcontext()
    return torch.autocast(device.type, dtype=dtype)


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

    ``x`` (T, N, D) in any float dtype; ``h0``, ``c0`` (N, H) fp32; fp32 weights in PyTorch's layout. Returns
    the outputs (T, N, H) in bf16 and the final state in fp32. Weight gradients come back in fp32.
    ``train=False`` (no gradients wanted) skips the workspace the backward pass needs.
    """

    @staticmethod
    def forward(ctx, x, h0, c0, w_ih, w_hh, b_ih, b_hh, train: bool = True):
        weights = [w.to(torch.bfloat16) for w in (w_ih, w_hh, b_ih, b_hh)]
        xb, h0b, c0b = (t.to(torch.bfloat16) for t in (x, h0, c0))
        hidden = w_hh.shape[1]
        with torch.enable_grad():  # the kernel returns its workspace only with grad mode on
            y, hy, cy, workspace = torch.ops.aten.mkldnn_rnn_layer(
                xb, *weights, h0b, c0b, False, [], LSTM_MODE, hidden, 1, True, False, False, train)
        if train:
            ctx.input_dtype = x.dtype
            ctx.save_for_backward(xb, *weights, h0b, c0b, y, hy, cy, workspace)
        return y, hy.float(), cy.float()

    @staticmethod
    def backward(ctx, grad_y, grad_hy, grad_cy):
        x, w_ih, w_hh, b_ih, b_hh, h0, c0, y, hy, cy, workspace = ctx.saved_tensors
        grads = torch.ops.aten.mkldnn_rnn_layer_backward(
            x, w_ih, w_hh, b_ih, b_hh, h0, c0, y, hy, cy, _bf16(grad_y), _bf16(grad_hy), _bf16(grad_cy),
            False, LSTM_MODE, w_hh.shape[1], 1, True, True, False, [], False, workspace)
        dx, dw_ih, dw_hh, db_ih, db_hh, dh0, dc0 = grads
        return dx.to(ctx.input_dtype), dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, None


def _bf16(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.to(torch.bfloat16)
