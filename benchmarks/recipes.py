"""Which recipe gives the best model in a time budget? The sweep behind ``--preset auto`` (not a test).

    python benchmarks/recipes.py --budgets 80 300 --corpora shakespeare speeches-lower \\
        --precisions auto fp32 --recipes auto torch-rnn cpu-small 2x512-d25 [--threads 1]
    python benchmarks/recipes.py --fit          # the MIN_UPDATES consistent with the results so far
    python benchmarks/recipes.py --speeds       # characters/s of shapes and batch sizes, side by side

Every run trains under ``--time-budget`` with validation = the last 10% of the text
(``--val-frac 0.1 --test-frac 0``); runs are sequential. Each result row names the CPU, the
load average before and after (other processes distort throughput-dependent results), the
torch threads and the date; rows accumulate in ``benchmarks/results/recipes.json`` and the
markdown table ``benchmarks/results/recipes.md`` is rewritten from them.

Corpora: ``shakespeare`` and ``speeches`` (``../shared/data``; ``-lower`` = lowercased), and
``docs10m``: about 10 MB of freely available text found on the machine (Vim's manuals, the
common licences, Perl's documentation), assembled in a fixed order, ASCII characters only.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
if not SHARED.is_dir():
    SHARED = Path("/work/shared/data")
RESULTS = ROOT / "benchmarks" / "results" / "recipes.json"

ARCH = dict(model_type="lstm", wordvec_size=64, seq_length=50)
RECIPES = {  # name -> (preset, options); an explicit architecture keeps a budget from choosing one itself
    "auto": ("auto", {}),
    "torch-rnn": (None, dict(ARCH, num_layers=2, rnn_size=128)),  # Adam 2e-3, step decay, no dropout
    "cpu-small": ("cpu-small", {}),
    "1x256": (None, dict(ARCH, num_layers=1, rnn_size=256, learning_rate=4e-3, lr_schedule="cosine",
                         warmup_iters=20, min_lr=4e-4)),
    "2x256": (None, dict(ARCH, num_layers=2, rnn_size=256, learning_rate=4e-3, lr_schedule="cosine",
                         warmup_iters=30, min_lr=4e-4, dropout=0.1)),
    "2x384-d10": (None, dict(ARCH, num_layers=2, rnn_size=384, batch_size=64, learning_rate=3.4e-3,
                             lr_schedule="cosine", warmup_iters=40, min_lr=3.4e-4, dropout=0.1)),
    "2x512-d25": (None, dict(ARCH, num_layers=2, rnn_size=512, learning_rate=3e-3, lr_schedule="cosine",
                             warmup_iters=50, min_lr=2e-4, dropout=0.25)),
    "2x512-b64-d25": (None, dict(ARCH, num_layers=2, rnn_size=512, batch_size=64, learning_rate=3.4e-3,
                                 lr_schedule="cosine", warmup_iters=50, min_lr=3.4e-4, dropout=0.25)),
    "2x512-b128-d25": (None, dict(ARCH, num_layers=2, rnn_size=512, batch_size=128, learning_rate=4.8e-3,
                                  lr_schedule="cosine", warmup_iters=50, min_lr=4.8e-4, dropout=0.25)),
    "3x512-d25": (None, dict(ARCH, num_layers=3, rnn_size=512, batch_size=64, learning_rate=3.4e-3,
                             lr_schedule="cosine", warmup_iters=50, min_lr=3.4e-4, dropout=0.25)),
}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                flags = Path("/proc/cpuinfo").read_text()
                isa = "AMX" if "amx_bf16" in flags else "AVX512-BF16" if "avx512_bf16" in flags else \
                    "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores, {isa})"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


def assemble_docs(dest: Path, size: int = 10_000_000) -> Path:
    """About ``size`` characters of manuals and licences found on this machine, in a fixed order."""
    sources = sorted(Path("/usr/share/vim").glob("vim*/doc/*.txt"))
    sources += sorted(Path("/usr/share/common-licenses").glob("*"))
    sources += sorted(Path("/usr/share/perl").glob("*/pod/*.pod")) + sorted(Path("/usr/share/doc").glob("*/copyright"))
    parts, total = [], 0
    for path in sources:
        if total >= size:
            break
        try:
            text = path.read_bytes().decode("ascii", errors="ignore")  # the manuals' tables of symbols out
        except OSError:
            continue
        parts.append(text)
        total += len(text)
    if total < size // 2:
        raise SystemExit(f"only {total:,} characters of documentation found on this machine")
    dest.write_text("".join(parts)[:size], encoding="utf-8")
    return dest


def prepare(corpus: str, tmp: Path):
    """(h5, json, training characters) of a named corpus, preprocessed into ``tmp``."""
    import charrnn

    corpus, _, first = corpus.partition(":")  # "shakespeare:200k": its first 200,000 characters
    name, lower = corpus.removesuffix("-lower"), corpus.endswith("-lower")
    text = {"shakespeare": SHARED / "tiny-shakespeare.txt", "speeches": SHARED / "speeches.txt"}.get(name)
    if name == "docs10m":
        text = assemble_docs(tmp / "docs10m.txt")
    if text is None or not Path(text).is_file():
        raise SystemExit(f"no corpus {corpus!r} here")
    if first:
        short = tmp / f"{corpus}-{first}.txt"
        short.write_text(Path(text).read_text(encoding="utf-8")[:int(first.lower().replace("k", "000"))])
        text, corpus = short, f"{corpus}-{first}"
    pre = charrnn.preprocess(text, tmp / f"{corpus}.h5", tmp / f"{corpus}.json", val_frac=0.1, test_frac=0.0,
                             lowercase=lower)
    return pre


def run_one(corpus: str, pre, budget: float | None, precision: str, recipe: str, tmp: Path,
            updates: int | None = None, dropout: float | None = None, eval_every: int = 0) -> dict:
    """One training run: for ``budget`` seconds, or (load-independent) for ``updates`` iterations."""
    import charrnn

    preset, options = RECIPES[recipe]
    if dropout is not None:
        options, recipe = {**options, "dropout": dropout}, f"{recipe}@d{dropout:g}"
    limit = dict(time_budget=budget) if budget else dict(max_iters=updates)
    load_before = os.getloadavg()
    t0 = time.monotonic()
    result = charrnn.train(input_h5=str(pre.output_h5), input_json=str(pre.output_json), gpu=-1, preset=preset,
                           checkpoint_every=eval_every, print_every=0, quiet=True, max_epochs=100_000, overwrite=True,
                           checkpoint_name=str(tmp / f"{corpus}-{recipe}-{budget or updates}-{precision}"),
                           precision=precision, **limit, **options)
    seconds = time.monotonic() - t0
    budget = budget or seconds
    opt = json.loads(result.checkpoint.with_suffix(".json").read_text())["opt"]
    picked = json.loads(opt["recipe"]) if opt.get("recipe") else {}
    h = result.history
    return {"corpus": corpus, "budget_s": budget, "updates": updates, "precision": precision, "recipe": recipe,
            "shape": f"{opt['num_layers']}x{opt['rnn_size']} b{opt['batch_size']} d{opt['dropout']:g} "
                     f"lr{opt['learning_rate']:.2g}",
            "why": picked.get("why"), "iterations": result.iterations,
            "val_loss": result.val_loss, "best_val_loss": min(h.val_loss_history) if h.val_loss_history else None,
            "curve": [[it, round(v, 4)] for it, v in zip(h.val_loss_history_it, h.val_loss_history)],
            "train_loss": sum(h.train_loss_history[-50:]) / max(1, len(h.train_loss_history[-50:])),
            "wall_s": round(seconds, 1), "over_budget": round(seconds / budget - 1, 4),
            "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in os.getloadavg()],
            "threads": picked.get("threads") or __import__("torch").get_num_threads(), "cpu": cpu_model(),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


QUIET_LOAD = 2.5  # a 1-minute load average above this distorts a throughput-dependent result


def write_table(rows: list[dict], path: Path) -> None:
    lines = ["| corpus | budget | precision | recipe | shape | iterations | val loss | wall (over) | load 1m | threads "
             "| date |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["corpus"], r.get("updates") or 0, r["budget_s"] if not r.get("updates")
                                         else 0, r["precision"], r["val_loss"] or 99)):
        load, fixed = r["load_before"][0], bool(r.get("updates"))  # a fixed number of updates: load-independent
        limit = f"{r['updates']} updates" if fixed else f"{r['budget_s']:g} s"
        wall = f"{r['wall_s']:.0f} s" + ("" if fixed else f" ({r['over_budget']:+.1%})")
        lines.append(f"| {r['corpus']} | {limit} | {r['precision']} | {r['recipe']} | {r['shape']} "
                     f"| {r['iterations']} | {r['val_loss']:.3f} | {wall} "
                     f"| {load:.1f}{' (distorted)' if load > QUIET_LOAD and not fixed else ''} | {r['threads']} | {r['date']} |")
    cpus = sorted({r["cpu"] for r in rows})
    path.write_text(f"Measured on: {'; '.join(cpus)}. Rows with a load average above {QUIET_LOAD} shared the "
                    "CPU with other work: their iteration counts, and so their losses, are not this machine's.\n\n"
                    + "\n".join(lines) + "\n")


def fit(rows: list[dict]) -> None:
    """For each (corpus, budget, precision, cpu): the winning fixed shape, and which MIN_UPDATES agree."""
    from charrnn.training.recipe import MIN_UPDATES

    groups: dict = {}
    for r in rows:
        if r["recipe"] in RECIPES and r["recipe"] not in ("auto", "cpu-small", "torch-rnn") \
                and not r.get("updates") and r["load_before"][0] <= QUIET_LOAD:
            groups.setdefault((r["corpus"], r["budget_s"], r["precision"], r["cpu"], r["threads"]), []).append(r)
    low, high = 0, float("inf")
    for key, group in groups.items():
        best = min(group, key=lambda r: r["val_loss"])
        size = lambda r: RECIPES[r["recipe"]][1].get("rnn_size", 0) * RECIPES[r["recipe"]][1].get("num_layers", 0)
        bigger = [r["iterations"] for r in group if size(r) > size(best)]
        low = max(low, min(bigger, default=0) + 1)  # a bigger, losing shape had too few updates
        high = min(high, best["iterations"])  # the winner had enough
        print(f"{key[:3]}: best {best['recipe']} ({best['iterations']} updates, val {best['val_loss']:.3f}); "
              f"bigger shapes got {bigger}")
    print(f"MIN_UPDATES consistent with every group on a quiet machine: {low} .. {high} (now {MIN_UPDATES})")


def speeds(precision: str, rounds: int = 3, seconds: float = 4.0) -> None:
    """Training characters per second of a few shapes and batch sizes, interleaved (median of rounds)."""
    import torch

    from charrnn.device import select_device
    from charrnn.training.recipe import Shape, _steps_per_second
    from charrnn.precision import resolve_precision

    device = select_device(-1)
    dtype = resolve_precision(precision, device)
    shapes = [Shape(1, 256, 50), Shape(1, 256, 128), Shape(2, 512, 50), Shape(2, 512, 64), Shape(2, 512, 128)]
    found = {s: [] for s in shapes}
    for _ in range(rounds):
        for s in shapes:
            found[s].append(_steps_per_second(s, 65, 50, device, dtype, seconds)[0] * s.batch_size * 50)
    print(f"{cpu_model()}, {torch.get_num_threads()} threads, {precision}, load {os.getloadavg()[0]:.1f}")
    for s in shapes:
        print(f"| {s} | {sorted(found[s])[rounds // 2]:,.0f} chars/s |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budgets", type=float, nargs="+", default=[80.0], help="seconds")
    parser.add_argument("--corpora", nargs="+", default=["shakespeare"],
                        help="shakespeare, speeches, docs10m, each optionally with -lower")
    parser.add_argument("--precisions", nargs="+", default=["auto"])
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--updates", type=int, help="train each recipe for this many iterations instead of a budget "
                                                    "(the result does not depend on the machine's load)")
    parser.add_argument("--dropouts", type=float, nargs="+", help="run each fixed recipe with each of these dropouts")
    parser.add_argument("--eval-every", type=int, default=0,
                        help="validate (and checkpoint) every N updates, recording the curve (default: at the end)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--max-load", type=float, help="skip a run while the 1-minute load average is above this")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--fit", action="store_true", help="only fit MIN_UPDATES to the stored results")
    parser.add_argument("--speeds", action="store_true", help="only compare the speed of shapes and batch sizes")
    args = parser.parse_args()
    rows = json.loads(args.output.read_text()) if args.output.is_file() else []
    if args.fit:
        return fit(rows)
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.speeds:
        return speeds(args.precisions[0])
    with tempfile.TemporaryDirectory() as tmp:
        for corpus in args.corpora:
            pre = prepare(corpus, Path(tmp))
            for budget in [None] if args.updates else args.budgets:
                for precision in args.precisions:
                    for recipe, dropout in [(r, d) for r in args.recipes for d in args.dropouts or [None]]:
                        if args.max_load and os.getloadavg()[0] > args.max_load:
                            print(f"skipped {corpus} {budget:g} s {precision} {recipe}: load {os.getloadavg()[0]:.1f}")
                            continue
                        if args.updates and RECIPES[recipe][0] == "auto":
                            continue  # the auto recipe needs a time budget
                        row = run_one(corpus, pre, budget, precision, recipe, Path(tmp), args.updates, dropout,
                                      args.eval_every)
                        rows.append(row)
                        print(json.dumps(row), flush=True)
                        args.output.parent.mkdir(parents=True, exist_ok=True)
                        args.output.write_text(json.dumps(rows, indent=1))
                        write_table(rows, args.output.with_suffix(".md"))


if __name__ == "__main__":
    main()
