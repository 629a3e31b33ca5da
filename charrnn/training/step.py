"""One training iteration, and the model and optimizer it runs on: shared by training, lr-find and bench.

Keeping these in one place means every measured figure (a suggested learning rate, a
benchmark's ms/iteration) comes from the same arithmetic as ``charrnn train``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..config import ModelConfig
from ..model import CharRNN, State, detach_state
from ..precision import autocast


def build_model(config: ModelConfig, device: torch.device | str = "cpu", weight_init: str = "torch-rnn",
                init_std: float = 0.05) -> CharRNN:
    """A fresh model in training mode on ``device``, initialised by ``weight_init`` (seed torch first)."""
    model = CharRNN(config)
    if weight_init != "torch-rnn":
        model.reset_parameters(weight_init, init_std)
    return model.to(device).train()


def build_optimizer(model: torch.nn.Module, learning_rate: float, device: torch.device) -> torch.optim.Optimizer:
    """Adam, fused where the device has a fused kernel."""
    kwargs = {"fused": True} if device.type in ("cuda", "cpu") else {"foreach": True}
    return torch.optim.Adam(model.parameters(), lr=learning_rate, **kwargs)


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


@dataclass
class StepResult:
    loss: float
    state: State | None  # the carried hidden state, detached
    grad_norm: float | None = None  # with statistics: the global gradient norm before clipping
    update_ratios: dict = field(default_factory=dict)  # with statistics: log10(mean |update| / mean |param|) per layer


def train_step(net: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               state: State | None = None, grad_clip: float = 5.0, autocast_dtype: torch.dtype | None = None,
               stats_groups: dict | None = None, scaler: torch.amp.GradScaler | None = None) -> StepResult:
    """Forward, backward, clip each gradient element to [-grad_clip, grad_clip], one optimizer update.

    ``net`` is the model (or its DistributedDataParallel wrapper); ``state`` is carried from the
    previous minibatch (truncated backpropagation through time). With ``stats_groups`` (the
    model's :func:`~charrnn.model.parameter_groups`) it also measures the gradient norm and the
    update:parameter ratio of each layer. With ``scaler`` (fp16) the loss is scaled for the backward
    pass, the gradients unscaled before clipping, and a step whose gradients overflowed is skipped.
    """
    optimizer.zero_grad(set_to_none=True)
    with autocast(x.device, autocast_dtype):
        loss, new_state = net(x, state, y)
    (loss if scaler is None else scaler.scale(loss)).backward()
    if scaler is not None:
        scaler.unscale_(optimizer)  # clipping and the statistics see the true gradients
    params = [p for group in optimizer.param_groups for p in group["params"]]
    grad_norm, before = None, None
    if stats_groups is not None:
        grads = [p.grad for p in params if p.grad is not None]
        grad_norm = float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))) if grads else 0.0
        before = {name: [p.detach().clone() for p in ps] for name, ps in stats_groups.items()}
    if grad_clip > 0:
        torch.nn.utils.clip_grad_value_(params, grad_clip)
    if scaler is None:
        optimizer.step()
    else:
        scaler.step(optimizer)  # skipped when a gradient is inf/NaN; the scale then backs off
        scaler.update()
    ratios = _update_ratios(stats_groups, before) if stats_groups is not None else {}
    return StepResult(loss.item(), detach_state(new_state), grad_norm, ratios)


def _update_ratios(groups: dict, before: dict) -> dict[str, float | None]:
    """log10(mean |update| / mean |parameter|) per layer: about -3 is healthy; None = no update."""
    sums = []  # on the device, read back in one transfer (not two syncs per parameter)
    for name, ps in groups.items():
        sums.append(torch.stack([(p.detach() - b).abs().sum().double() for p, b in zip(ps, before[name])]).sum())
        sums.append(torch.stack([p.detach().abs().sum().double() for p in ps]).sum())
    values = torch.stack(sums).tolist()
    ratios = {}
    for k, name in enumerate(groups):
        update, size = values[2 * k], values[2 * k + 1]
        ratios[name] = math.log10(update / size) if update > 0 and size > 0 else None
    return ratios


def evaluate(model: CharRNN, batches, device: torch.device, autocast_dtype: torch.dtype | None = None,
             max_batches: int | None = None) -> float:
    """Mean cross-entropy (nats) over every batch of a split (or the first ``max_batches``),
    from a zero state, as torch-rnn does."""
    was_training = model.training
    model.eval()
    total = torch.zeros((), device=device)
    state = None
    with torch.inference_mode(), autocast(device, autocast_dtype):
        count = min(batches.num_batches, max_batches or batches.num_batches)
        for k in range(count):
            x, y = (torch.from_numpy(a).to(device) for a in batches.batch(k))
            loss, state = model.loss(x, y, state)
            total += loss
    model.train(was_training)
    return float(total) / count
