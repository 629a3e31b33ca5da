"""Reading training stats files (``<checkpoint_name>.stats.jsonl``) for the live dashboard.

The file is append-only JSON lines. A reader asks for the records after a byte offset and gets
the new offset back, so the server keeps no per-client state. Only complete lines count: a torn
(unfinished or unparseable) last line is left for the next read. The first read of a long run is
downsampled to a few thousand points so that the page stays fast at a million iterations.
"""

from __future__ import annotations

import json
from pathlib import Path

SUFFIX = ".stats.jsonl"
MAX_POINTS = 2000      # train records sent on a first read
MAX_SAMPLES = 20       # sample records kept on a first read
MAX_READ = 64 << 20    # bytes read per request


def find_runs(sources: list[str | Path]) -> dict[str, Path]:
    """Run name -> stats file, for checkpoint directories (every run in them) and prefixes (``cv/checkpoint``)."""
    found: dict[str, Path] = {}
    for src in sources:
        p = Path(src)
        if p.is_dir():
            files = sorted(p.glob("*" + SUFFIX))
        elif p.name.endswith(SUFFIX):
            files = [p]
        else:
            files = [p.with_name(p.name + SUFFIX)]
        for f in files:
            if f.is_file():
                name = f"{f.parent.resolve().name}/{f.name[:-len(SUFFIX)]}"
                found.setdefault(name, f)
    return found


def read_records(path: Path, offset: int = 0) -> tuple[list[dict], int]:
    """The records of complete lines after byte ``offset``, and the offset after the last of them."""
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        offset = min(offset, size)
        f.seek(offset)
        data = f.read(min(size - offset, MAX_READ))
    end = data.rfind(b"\n") + 1
    records = []
    for line in data[:end].splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("type"), str):
            records.append(rec)
    return records, offset + end


def apply_restarts(records: list[dict]) -> list[dict]:
    """Drop points that a later start (a resume) replaced: those with ``i`` beyond its iteration."""
    out: list[dict] = []
    for rec in records:
        if rec["type"] == "start" and isinstance(rec.get("iteration"), (int, float)):
            out = [r for r in out if not isinstance(r.get("i"), (int, float)) or r["i"] <= rec["iteration"]]
        out.append(rec)
    return out


def _mean(values: list) -> float | None:
    values = [v for v in values if isinstance(v, (int, float))]
    return sum(values) / len(values) if values else None


def _merge(bucket: list[dict]) -> dict:
    """One train record standing for several: mean loss, throughput and (log10) ratios; the last lr."""
    losses = [x for r in bucket for x in (r.get("losses") or []) if isinstance(x, (int, float))]
    ratios: dict[str, list] = {}
    for r in bucket:
        for k, v in (r.get("update_ratio") or {}).items():
            ratios.setdefault(k, []).append(v)
    last = bucket[-1]
    return {"type": "train", "i": last.get("i"), "time": last.get("time"),
            "losses": [_mean(losses)] if losses else [], "lr": last.get("lr"),
            "chars_per_s": _mean([r.get("chars_per_s") for r in bucket]),
            "grad_norm": _mean([r.get("grad_norm") for r in bucket]),
            "update_ratio": {k: _mean(v) for k, v in ratios.items()}, "merged": len(bucket)}


def downsample(records: list[dict], max_points: int = MAX_POINTS) -> list[dict]:
    """At most ``max_points`` train records (merged in runs), the last samples, everything else as is."""
    train = [r for r in records if r["type"] == "train"]
    stride = -(-len(train) // max_points) if len(train) > max_points else 1
    samples = [r for r in records if r["type"] == "sample"][-MAX_SAMPLES:]
    keep_sample = {id(r) for r in samples}
    out, bucket = [], []
    for rec in records:
        if rec["type"] == "train" and stride > 1:
            bucket.append(rec)
            if len(bucket) == stride:
                out.append(_merge(bucket))
                bucket = []
        elif rec["type"] != "sample" or id(rec) in keep_sample:
            out.append(rec)
    if bucket:
        out.append(_merge(bucket))
    return out


def snapshot(path: Path, offset: int = 0) -> dict:
    """What the page receives: new records after ``offset`` (a first read is cleaned and downsampled)."""
    if offset > path.stat().st_size:  # the file was replaced (a new run of the same name): start over
        offset = 0
    records, new_offset = read_records(path, offset)
    if offset == 0:
        records = downsample(apply_restarts(records))
    return {"offset": new_offset, "records": records, "reset": offset == 0}
