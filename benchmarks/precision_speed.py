"""Training speed per precision, side by side in one process, against the plain fp32 PyTorch loop.

    python benchmarks/precision_speed.py [--sizes 2x128 2x512] [--rounds 5] [--profile] [--compile]

Variants, timed in alternation (so that load from other processes hits all alike), over
``--rounds`` rounds of ``--iters`` iterations each; the table gives the median ms per
iteration and the ratio to the plain loop:

* plain fp32: the loop from the PyTorch tutorials (``nn.LSTM``, Adam), the reference;
* charrnn fp32: ``--precision fp32`` (must not be slower than plain: the floor on AVX2 machines);
* charrnn autocast: bf16 ``torch.autocast`` around the plain module (what ``--precision bf16``
  did before the fused path, and what AVX2 machines still run);
* charrnn bf16: ``--precision bf16`` (on this machine also ``auto``): oneDNN's fused bf16 LSTM
  with each weight cast once and fp32 gradients straight back;
* with ``--compile``: torch.compile of the plain model under bf16 autocast (compile time shown).

``--profile`` prints torch.profiler's top operators for one iteration of each charrnn variant.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import charrnn.model as model_module
from charrnn.bench import V, charrnn_step_fn, plain_step_fn, PlainLSTM, N, T
from charrnn.hardware import cpu_info
from charrnn.precision import resolve_precision

CPU = torch.device("cpu")


def autocast_only(layers: int, H: int):
    """charrnn's step under bf16 autocast with the fused LSTM path switched off."""
    step = charrnn_step_fn(layers, H, CPU, "bf16")

    def run():
        fused = model_module.bf16_lstm_active
        model_module.bf16_lstm_active = lambda device: False
        try:
            return step()
        finally:
            model_module.bf16_lstm_active = fused
    return run


def compiled(layers: int, H: int):
    """torch.compile of the plain model under bf16 autocast; returns (step, compile seconds)."""
    model = PlainLSTM(layers, H)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3, fused=True)
    x, y = torch.randint(V, (N, T)), torch.randint(V, (N, T))

    def loss_fn():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return torch.nn.functional.cross_entropy(model(x).reshape(-1, V).float(), y.reshape(-1))
    loss_fn = torch.compile(loss_fn)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        opt.step()
        return loss.item()
    t0 = time.perf_counter()
    step()
    step()
    return step, time.perf_counter() - t0


def timed(fns: dict, rounds: int, iters: int) -> dict[str, float]:
    """Median ms per iteration of each function, alternating functions within every round."""
    for fn in fns.values():
        fn()
    samples = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(iters):
                fn()
            samples[name].append((time.perf_counter() - t0) / iters * 1000)
    return {name: statistics.median(ms) for name, ms in samples.items()}


def profile(name: str, fn) -> None:
    from torch.profiler import profile as torch_profile
    fn()
    with torch_profile() as prof:
        for _ in range(3):
            fn()
    print(f"\n### profile: {name} (3 iterations)\n")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["2x128", "2x512"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iters", type=int, default=4)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    native = resolve_precision("auto", CPU) is not None
    print(f"CPU: {cpu_info().describe()}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
          f"--precision auto = {'bf16' if native else 'fp32'}; batch {N} x seq {T}, median of {args.rounds} rounds "
          f"of {args.iters} iterations", flush=True)
    print("\n| layers x size | variant | ms/iter | vs plain fp32 loop |\n|---|---|---|---|")
    for size in args.sizes:
        layers, H = map(int, size.split("x"))
        fns = {"plain fp32": plain_step_fn(layers, H, CPU), "charrnn fp32": charrnn_step_fn(layers, H, CPU, "fp32"),
               "charrnn autocast": autocast_only(layers, H), "charrnn bf16": charrnn_step_fn(layers, H, CPU, "bf16")}
        compile_s = None
        if args.compile:
            fns["compiled bf16"], compile_s = compiled(layers, H)
        ms = timed(fns, args.rounds, args.iters)
        for name, value in ms.items():
            note = f" (compile {compile_s:.0f} s)" if name == "compiled bf16" else ""
            print(f"| {layers} x {H} | {name}{note} | {value:.1f} | {ms['plain fp32'] / value:.2f}x |", flush=True)
        if args.profile:
            for name in ("charrnn autocast", "charrnn bf16"):
                profile(f"{size} {name}", fns[name])


if __name__ == "__main__":
    main()
