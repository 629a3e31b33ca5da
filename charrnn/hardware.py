"""What this CPU can do: model name and the instruction sets that matter for training speed.

Read from the CPU's own feature flags (``/proc/cpuinfo`` on Linux, ``sysctl`` on macOS), never
from a timing that noise can flip. Torch-free, so ``charrnn bench`` and ``--help`` stay cheap.
``CHARRNN_CPU_FEATURES`` overrides the detected flags (e.g. ``avx2`` to take the AVX2-only path
on an AMX machine, ``none`` for none), which is how tests force each path.
"""

from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

ENV_OVERRIDE = "CHARRNN_CPU_FEATURES"
# Our names, with the spellings each source uses for them.
FLAG_NAMES = {
    "avx2": ("avx2",),
    "avx512": ("avx512f",),
    "avx512_bf16": ("avx512_bf16", "avx512bf16"),
    "amx_bf16": ("amx_bf16", "amxbf16"),
}
LABELS = {"avx2": "AVX2", "avx512": "AVX-512", "avx512_bf16": "AVX512-BF16", "amx_bf16": "AMX-BF16"}


@dataclass(frozen=True)
class CPUInfo:
    model: str
    features: frozenset[str]  # a subset of FLAG_NAMES' keys
    overridden: bool = False  # features come from CHARRNN_CPU_FEATURES

    @property
    def native_bf16(self) -> bool:
        """bf16 matrix multiplies in hardware: AMX tiles or AVX512-BF16 dot products."""
        return bool(self.features & {"amx_bf16", "avx512_bf16"})

    def describe(self) -> str:
        """``Intel Xeon ... (AVX2, AVX-512, AVX512-BF16, AMX-BF16)``."""
        found = [LABELS[f] for f in FLAG_NAMES if f in self.features] or ["without AVX2"]
        note = f", from ${ENV_OVERRIDE}" if self.overridden else ""
        return f"{self.model} ({', '.join(found)}{note})"


def parse_flags(raw: str) -> frozenset[str]:
    """Our feature names among raw flags (``/proc/cpuinfo`` style, space or comma separated)."""
    tokens = {t.strip().lower() for t in raw.replace(",", " ").split()}
    return frozenset(name for name, spellings in FLAG_NAMES.items() if tokens & set(spellings))


def _linux() -> tuple[str, str]:
    model, flags = "", ""
    for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = value
        if model and flags:
            break
    return model, flags


def _macos() -> tuple[str, str]:
    def sysctl(name: str) -> str:
        out = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() if out.returncode == 0 else ""
    return sysctl("machdep.cpu.brand_string"), " ".join(
        [sysctl("machdep.cpu.features"), sysctl("machdep.cpu.leaf7_features")])


@lru_cache(maxsize=None)
def _detected() -> tuple[str, frozenset[str]]:
    model, flags = "", ""
    try:
        if Path("/proc/cpuinfo").exists():
            model, flags = _linux()
        elif platform.system() == "Darwin":
            model, flags = _macos()
    except (OSError, subprocess.SubprocessError):
        pass
    return model or platform.processor() or platform.machine() or "unknown CPU", parse_flags(flags)


def cpu_info() -> CPUInfo:
    """This machine's CPU; ``$CHARRNN_CPU_FEATURES`` (if set) replaces the detected features."""
    model, features = _detected()
    override = os.environ.get(ENV_OVERRIDE)
    if override is None:
        return CPUInfo(model, features)
    return CPUInfo(model, frozenset() if override.strip().lower() == "none" else parse_flags(override), True)
