"""``charrnn bench --quick`` runs end to end and reports every figure (no timing is asserted)."""

import json

import pytest


@pytest.mark.slow
def test_bench_quick(cli, tmp_path):
    out = tmp_path / "bench.json"
    result = cli("bench", "--quick", "-o", out)
    assert result.code == 0, result.err
    data = json.loads(out.read_text())
    assert data["peaks"]["fp32"] > 0
    rows = [r for r in data["training"] if "error" not in r]
    assert {(r["layers"], r["rnn_size"]) for r in rows} == {(2, 128), (2, 512)}
    assert all(r["ms_per_iter"] > 0 and r["plain_ms_per_iter"] > 0 and r["speedup_vs_plain"] > 0 for r in rows)
    assert {"charrnn_1_streams", "charrnn_256_streams", "plain_pytorch_1_stream"} <= set(data["sampling"])
    assert data["preprocess"]["mb_per_s"] > 0 and data["startup"]["help_s"] > 0
    assert "| 2 x 128 |" in result.out and "charrnn / plain" in result.out
