"""Starting the compiled engine: its cache in the user's cache directory, the NumPy fallback said once,
a long first call explained, every kernel compiled ahead of time by the warm-up."""

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str, **env) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "CHARRNN_ENGINE")}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**base, "PYTHONPATH": str(ROOT), **env})


def test_the_kernel_cache_lives_in_the_users_cache_directory(tmp_path):
    code = ("from charrnn.sampling.engine import choose_backend; b = choose_backend(); import numba; "
            "print(b, numba.config.CACHE_DIR)")
    assert _python(code, XDG_CACHE_HOME=str(tmp_path)).stdout.split() == ["numba", str(tmp_path / "charrnn" / "numba")]
    mine = tmp_path / "mine"
    assert _python(code, NUMBA_CACHE_DIR=str(mine)).stdout.split() == ["numba", str(mine)]


def test_without_numba_the_numpy_engine_runs_and_says_so_once():
    code = ("import sys; sys.modules['numba'] = None\n"
            "from charrnn.config import ModelConfig\n"
            "from charrnn.sampling.engine import Engine\n"
            "from charrnn.sampling.warm import tiny_weights\n"
            "c = ModelConfig(8, 'lstm', 4, 8, 2)\n"
            "print(Engine(c, tiny_weights(c)).backend, Engine(c, tiny_weights(c)).backend)")
    out = _python(code)
    assert out.stdout.split() == ["numpy", "numpy"]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("charrnn: sampling on NumPy (slower, same text)"), out.stderr


def test_a_long_first_call_says_what_it_is_doing(monkeypatch, capsys):
    from charrnn.sampling import engine_numba, runtime

    monkeypatch.setattr(runtime, "_SAID", set())
    monkeypatch.setattr(engine_numba, "WAIT_NOTICE", 0.01)
    said = threading.Event()

    def slow_kernel():  # stands for a kernel compiling: it returns once the notice is out
        deadline = time.monotonic() + 30
        while not runtime._SAID and time.monotonic() < deadline:
            time.sleep(0.01)
        said.set()
        return 7

    assert engine_numba._call(slow_kernel) == 7 and said.is_set()
    assert engine_numba._call(slow_kernel) == 7  # compiled now: no second notice
    err = capsys.readouterr().err.splitlines()
    assert err == [engine_numba.COMPILING.format(engine_numba.numba.config.CACHE_DIR).join(["charrnn: ", ""])]


def test_the_warm_up_compiles_every_kernel_a_sample_or_the_server_uses():
    from charrnn.sampling import engine_numba
    from charrnn.sampling.warm import warm_up

    assert warm_up("numpy") == "numpy"
    assert warm_up() == "numba"
    kernels = {*engine_numba._SERIAL, *engine_numba._PARALLEL, engine_numba._prime}
    assert kernels <= engine_numba._COMPILED


@pytest.mark.slow
def test_the_first_streamed_request_of_a_fresh_server_streams(tmp_path):
    """A 2 x 128 model (9,000 characters take a while): its first stream arrives in pieces, not all at the end."""
    pytest.importorskip("starlette")
    import torch
    from starlette.testclient import TestClient

    from charrnn import CharRNN, ModelConfig
    from charrnn.checkpoint import save_checkpoint
    from charrnn.serve.app import create_app
    from charrnn.vocab import Vocabulary

    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "m", 1, CharRNN(ModelConfig(65)), Vocabulary(tuple(range(32, 97))), {})
    with TestClient(create_app([ckpt], log=lambda m: None)) as client:
        body = {"prompt": "THE ", "max_tokens": 9000, "seed": 1, "stream": True}
        with client.stream("POST", "/v1/completions", json=body) as r:
            chunks = [line for line in r.iter_lines() if line.startswith("data: {")]
    assert len(chunks) >= 3  # the first characters at once, then pieces as they come: no compile mid-request
