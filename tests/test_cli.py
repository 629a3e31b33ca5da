"""The command line as a whole: start-up, entry points, the demo."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_help_does_not_import_torch():
    code = "import sys; from charrnn.cli import cli; import charrnn; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_python_dash_m_and_help_for_every_command():
    for args in ([], ["preprocess"], ["train"], ["sample"], ["demo"]):
        result = subprocess.run([sys.executable, "-m", "charrnn", *args, "--help"], capture_output=True, text=True)
        assert result.returncode == 0 and "Usage:" in result.stdout


def test_train_help_lists_every_torch_rnn_flag(cli):
    flags = ("--input-h5 --input-json --batch-size --seq-length --init-from --reset-iterations --model-type "
             "--wordvec-size --rnn-size --num-layers --dropout --batchnorm --max-epochs --learning-rate --grad-clip "
             "--lr-decay-every --lr-decay-factor --print-every --checkpoint-every --checkpoint-name "
             "--speed-benchmark --memory-benchmark --gpu --gpu-backend --seed --resume").split()
    text = cli("train", "--help").out
    assert [f for f in flags if f not in text] == []


def test_unknown_option_is_one_line(cli):
    result = cli("train", "--rnn_size", "3")
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1 and "--rnn_size" in result.err


@pytest.mark.slow
def test_demo_fast(tmp_path):
    result = subprocess.run([sys.executable, "-m", "charrnn", "demo", "--fast", "--output-dir", str(tmp_path / "d")],
                            capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "temperature 0.5" in result.stdout and "temperature 1.0" in result.stdout
    assert (tmp_path / "d" / "stdlib.h5").exists() and list((tmp_path / "d" / "cv").glob("*.pt"))
    assert "charrnn sample --checkpoint" in result.stdout
