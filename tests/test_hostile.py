"""Hostile files (issue 16): every class of failure the fuzzer found is refused early, cleanly, the same way
by every command. The files are generated here; the fuzzer itself runs a seeded, bounded campaign."""

from __future__ import annotations

import importlib.util
import io
import json
import math
import pickle
import subprocess
import sys
import zipfile
from collections import OrderedDict
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from charrnn.checkpoint import load_checkpoint, read_payload

from .conftest import assert_one_line_error

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("charrnn_fuzz", ROOT / "scripts" / "fuzz.py")
fuzz = importlib.util.module_from_spec(spec)
sys.modules["charrnn_fuzz"] = fuzz
spec.loader.exec_module(fuzz)


# -- helpers: hostile variants of a real checkpoint -----------------------------------------------------
def raw_payload(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def save_payload(path, payload) -> Path:
    torch.save(payload, path)
    return path


def pickle_pt(path, obj) -> Path:
    """A ``.pt``-shaped zip whose data.pkl is ``obj`` pickled as is (for structures torch would not write)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps(obj, protocol=2))
        z.writestr("archive/byteorder", "little")
    path.write_bytes(buf.getvalue())
    return path


def every_reader_refuses(cli, path, dataset, *fragments, resume=True) -> None:
    """sample (torch-free), eval, train --resume and convert give the same one-line error."""
    h5, js = dataset
    runs = [cli("sample", "--checkpoint", path, "--length", "5"),
            cli("eval", "--checkpoint", path, "--input-h5", h5),
            cli("convert", path, "-o", path.parent / "converted")]
    if resume:
        runs.append(cli("train", "--resume", path, "--input-h5", h5, "--input-json", js, "--max-iters", "99"))
    for result in runs:
        assert_one_line_error(result, path.name, *fragments)
    assert len({r.err for r in runs}) == 1, [r.err for r in runs]  # the same message everywhere


# -- 1. declared sizes -------------------------------------------------------------------------------------
@pytest.mark.parametrize("agree", [True, False])
def test_deflate_bomb_is_refused_before_inflating(cli, trained, dataset, tmp_path, agree):
    import random

    entries = fuzz.zip_entries(trained.read_bytes())
    rng = random.Random(0 if agree else 1)
    while True:  # pick the variant asked for
        data, what = fuzz.deflate_bomb(rng, entries, sizes=(16 << 20,))
        if ("agrees" in what) == agree:
            break
    path = tmp_path / "bomb_30.pt"
    path.write_bytes(data)
    assert path.stat().st_size < 1 << 20  # a small file declaring 16 MB of tensor data
    every_reader_refuses(cli, path, dataset, "storage")


@pytest.mark.parametrize("tokens", [3 * 10 ** 9, 2 ** 40])
def test_hdf5_declaring_billions_of_tokens_is_refused_without_allocating(cli, trained, dataset, tmp_path, tokens):
    h5, _ = dataset
    bad = tmp_path / "huge.h5"
    with h5py.File(h5) as src, h5py.File(bad, "w") as f:
        f.create_dataset("train", data=src["train"][()])
        f.create_dataset("val", shape=(tokens,), dtype="u1", chunks=(1 << 16,), fillvalue=1)
    result = cli("eval", "--checkpoint", trained, "--input-h5", bad)
    assert_one_line_error(result, "'/val' declares", "sparse")
    assert "memory" not in result.err


def test_hdf5_ids_are_checked_chunk_by_chunk_when_streamed(dataset, tmp_path):
    from charrnn import Vocabulary
    from charrnn.data import StreamedBatches
    from charrnn.errors import CorruptFile

    h5, js = dataset
    bad = tmp_path / "late.h5"
    with h5py.File(h5) as src, h5py.File(bad, "w") as f:
        ids = src["train"][()].astype(np.int64)
        ids[len(ids) // 2 - 20] = 2 ** 40  # far from the start: found when its window is read
        f.create_dataset("train", data=ids)
    stream = StreamedBatches(bad, "train", len(Vocabulary.load(js)), 2, 8, window=2)
    stream.batch(0)
    with pytest.raises(CorruptFile, match="outside"):
        for k in range(stream.num_batches):
            stream.batch(k)


def test_hdf5_external_storage_is_not_followed(cli, trained, tmp_path):
    bad = tmp_path / "external.h5"
    with h5py.File(bad, "w") as f:
        f.create_dataset("val", shape=(100,), dtype="u1", external=[(str(tmp_path / "secret"), 0, 100)])
    (tmp_path / "secret").write_bytes(b"\x01" * 100)
    assert_one_line_error(cli("eval", "--checkpoint", trained, "--input-h5", bad), "other files")


# -- 2. the stored architecture is checked before anything is built ------------------------------------------
def test_million_layer_config_is_refused_at_once(cli, trained, dataset, tmp_path):
    payload = raw_payload(trained)
    payload["model_config"]["num_layers"] = 1_000_000
    path = save_payload(tmp_path / "deep_30.pt", payload)
    every_reader_refuses(cli, path, dataset, "num_layers")


@pytest.mark.parametrize("change,fragment", [
    (lambda p: p["model"].pop("embed.weight"), "embed.weight"),
    (lambda p: p["model"].__setitem__("head.weight", torch.zeros(3, 3)), "shape"),
    (lambda p: p["model_config"].__setitem__("model_type", "gru"), "shape"),
    (lambda p: p["model_config"].__setitem__("batchnorm", True), "norms.0.weight"),
    (lambda p: p["model_config"].__setitem__("num_layers", 2), "rnns.0.weight_ih_l1"),
    (lambda p: p["model"].__setitem__("extra", torch.zeros(1)), "extra"),
    (lambda p: p["model"]["head.bias"].fill_(math.nan), "non-finite"),
    (lambda p: p["vocab"]["tokens"].__setitem__(0, 0xD800), "surrogate"),
    (lambda p: p["vocab"]["tokens"].__setitem__(0, 2 ** 40), "vocab"),
    (lambda p: p["vocab"]["tokens"].__setitem__(0, -3), "vocab"),
    (lambda p: p.__setitem__("iteration", -1), "iteration"),
    (lambda p: p["model_config"].__setitem__("dropout", "x"), "dropout"),
])
def test_architecture_weights_and_vocabulary_must_agree(cli, trained, dataset, tmp_path, change, fragment):
    payload = raw_payload(trained)
    change(payload)
    path = save_payload(tmp_path / "bad_30.pt", payload)
    every_reader_refuses(cli, path, dataset, fragment)


@pytest.mark.parametrize("obj,fragment", [
    (lambda: _reduce(torch.FloatStorage, ()), "not a readable"),  # a storage type called as a function
    (lambda: _reduce(torch._utils._rebuild_tensor_v2, ([1.0, 2.0], 0, (2,), (1,), False, OrderedDict())),
     "not a storage"),  # a list where a storage belongs
    (lambda: _reduce(eval, ("1",)), "refusing"),
])
def test_malformed_pickles_are_refused(cli, dataset, tmp_path, obj, fragment):
    path = pickle_pt(tmp_path / "odd_1.pt", obj())
    every_reader_refuses(cli, path, dataset, fragment)


class _Reduce:
    def __init__(self, fn, args) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def _reduce(fn, args):
    return {"format": "charrnn-checkpoint", "x": _Reduce(fn, args)}


def test_unsupported_zip_compression_is_refused(cli, trained, dataset, tmp_path):
    data = bytearray(trained.read_bytes())
    at = data.find(b"PK\x01\x02")  # the first central-directory record: its compression method
    data[at + 10:at + 12] = (12).to_bytes(2, "little")  # bzip2
    path = tmp_path / "bz_30.pt"
    path.write_bytes(bytes(data))
    every_reader_refuses(cli, path, dataset, "compression method 12")


def test_readers_agree_with_torch_load_on_a_real_checkpoint(trained):
    ours = read_payload(trained)
    theirs = raw_payload(trained)
    for key, tensor in theirs["model"].items():
        assert np.array_equal(ours.model_state[key], tensor.numpy()), key
    opt = theirs["train_state"]["optimizer"]
    ours_opt = ours.train_state["optimizer"]
    assert ours_opt["param_groups"] == opt["param_groups"]
    assert np.array_equal(ours_opt["state"][3]["exp_avg"], opt["state"][3]["exp_avg"].numpy())


# -- 4. resume state, field by field -----------------------------------------------------------------------
@pytest.mark.parametrize("change,fragment", [
    (lambda ts: ts.__setitem__("rng_cpu", torch.zeros(10, dtype=torch.uint8)), "train_state.rng_cpu"),
    (lambda ts: ts.__setitem__("rng_cpu", "seed"), "train_state.rng_cpu"),
    (lambda ts: ts["history"].__setitem__("train_loss_history", 5), "train_loss_history"),
    (lambda ts: ts.__setitem__("history", [1, 2]), "train_state.history"),
    (lambda ts: ts["optimizer"]["param_groups"][0]["params"].pop(), "param_groups"),
    (lambda ts: ts["optimizer"]["param_groups"].append(dict(ts["optimizer"]["param_groups"][0])), "param_groups"),
    (lambda ts: ts["optimizer"]["state"][0].__setitem__("exp_avg", torch.zeros(2)), "exp_avg"),
    (lambda ts: ts["optimizer"]["param_groups"][0].__setitem__("betas", "x"), "betas"),
    (lambda ts: ts["optimizer"]["param_groups"][0].pop("weight_decay"), "weight_decay"),  # found by the fuzzer
    (lambda ts: ts["optimizer"]["state"][0].pop("exp_avg_sq"), "exp_avg_sq"),
    (lambda ts: ts.__setitem__("learning_rate", math.inf), "learning_rate"),
    (lambda ts: ts.__setitem__("state", [torch.zeros(1, 4, 16)]), "train_state.state"),
    (lambda ts: ts["config"].__setitem__("batch_size", "many"), "batch_size"),
    (lambda ts: ts.pop("optimizer"), "optimizer"),
])
def test_resume_state_is_validated_naming_the_field(cli, trained, dataset, tmp_path, change, fragment):
    payload = raw_payload(trained)
    change(payload["train_state"])
    path = save_payload(tmp_path / "state_30.pt", payload)
    h5, js = dataset
    result = cli("train", "--resume", path, "--input-h5", h5, "--input-json", js, "--max-iters", "31")
    assert_one_line_error(result, path.name, fragment)


# -- 5. .t7 field values --------------------------------------------------------------------------------------
def _pairs(levels: int) -> list:
    table = [1.0]
    for _ in range(levels):
        table = [table, table]
    return table


def _t7(tmp_path, change, name="m_7.t7") -> Path:
    tree = fuzz.t7_tree(np.random.default_rng(0))
    change(tree)
    path = tmp_path / name
    path.write_bytes(fuzz.T7Writer().write(tree).bytes())
    return path


@pytest.mark.parametrize("change,fragment", [
    (lambda t: t["model"].fields.__setitem__("dropout", "0.5"), "dropout"),
    (lambda t: t["model"].fields.__setitem__("dropout", -0.5), "dropout"),
    (lambda t: t["model"].fields.pop("wordvec_dim"), "wordvec_dim"),
    (lambda t: t["model"].fields.__setitem__("num_layers", 1_000_000), "num_layers"),
    (lambda t: t.__setitem__("i", math.inf), "iteration"),
    (lambda t: t.__setitem__("i", math.nan), "iteration"),
    (lambda t: t.__setitem__("i", -1), "iteration"),
    (lambda t: t["opt"].__setitem__("me", t["opt"]), "cycle"),
    (lambda t: t["opt"].__setitem__("dag", _pairs(25)), "more than"),  # 2^25 values in a 1 KB file
    (lambda t: t["model"].fields.__setitem__("idx_to_token", ["a", "\udcff", "c", " ", "\n"]), "surrogate"),
])
def test_t7_field_values_are_validated(cli, dataset, tmp_path, change, fragment):
    path = _t7(tmp_path, change)
    every_reader_refuses(cli, path, dataset, fragment, resume=False)
    assert not list(tmp_path.glob("converted*"))


def test_t7_reads_without_torch(tmp_path):
    path = _t7(tmp_path, lambda t: None)
    code = f"import sys; from charrnn.checkpoint import read_payload; read_payload({str(path)!r}); " \
           "print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.split() == ["False"]


# -- 6. JSON vocabularies: broken by mistake or built to hurt ------------------------------------------------
@pytest.mark.parametrize("text,fragment", [
    ("{not json", "not valid json"),
    ('{"token_to_idx": {"a": 1}}', "idx_to_token"),
    ('{"idx_to_token": {"1": "a", "3": "b"}}', "without gaps"),
    ('{"idx_to_token": {"1": "ab"}}', "neither one character"),
    ("[1, 2]", "not a torch-rnn vocabulary"),
    ("[" * 100_000 + "]" * 100_000, "not valid json"),
    ('{"idx_to_token": {"1": "a"}, "x": ' + "9" * 5000 + "}", "not valid json"),
    ('{"idx_to_token": {"1": "a", "2.5": "b"}}', "integers"),
    ('{"idx_to_token": {"1": "a", "-1": "b"}}', "integers"),
    ('{"idx_to_token": {"1": "\\ud800"}}', "surrogate"),
    ('{"idx_to_token": {"1": "a"}, "token_to_idx": {"a": "1"}}', "token_to_idx"),
    ('{"idx_to_token": {"1": 5}}', "string"),
    ('{"idx_to_token": {"1": "a"}, "token_to_idx": NaN}', "not valid json"),
])
def test_broken_and_hostile_vocabularies_are_refused(cli, dataset, tmp_path, text, fragment):
    h5, _ = dataset
    bad = tmp_path / "bad.json"
    bad.write_text(text)
    result = cli("train", "--input-h5", h5, "--input-json", bad, "--gpu", "-1", "--checkpoint-name", tmp_path / "c")
    assert_one_line_error(result, fragment)


# -- 7. convert never clobbers ----------------------------------------------------------------------------------
def test_convert_refuses_to_overwrite_without_the_flag(cli, tmp_path):
    path = _t7(tmp_path, lambda t: None)
    out = tmp_path / "cv" / "x"
    assert cli("convert", path, "-o", out).code == 0
    before = (tmp_path / "cv" / "x_7.pt").read_bytes()
    assert_one_line_error(cli("convert", path, "-o", out), "--overwrite", "x_7.pt")
    assert (tmp_path / "cv" / "x_7.pt").read_bytes() == before
    assert cli("convert", path, "-o", out, "--overwrite").code == 0
    assert load_checkpoint(tmp_path / "cv" / "x_7.pt").iteration == 7


# -- the names of checkpoint files -------------------------------------------------------------------------------
def test_one_rule_for_the_newest_checkpoint(tmp_path, trained, cli):
    import os
    import shutil

    from charrnn.checkpoint import CheckpointName, newest_checkpoint, resolve_checkpoint

    assert CheckpointName.parse("cv/run_1000.pt") == CheckpointName("cv/run", 1000, ".pt")
    assert CheckpointName.parse("cv/run_007.pt") is None and CheckpointName.parse("cv/run_-1.pt") is None
    assert CheckpointName("cv/run", 5, ".json").path == Path("cv/run_5.json")
    for name in ("a_10.pt", "b_9.pt", "a_2.pt"):
        shutil.copy(trained, tmp_path / name)
    os.utime(tmp_path / "a_2.pt")  # modified last, but an older iteration
    os.utime(tmp_path / "a_10.pt", (1, 1))
    assert newest_checkpoint(tmp_path) == tmp_path / "a_10.pt" == resolve_checkpoint(tmp_path)


# -- the fuzzer, seeded and bounded ---------------------------------------------------------------------------
def test_a_seeded_fuzzing_campaign_finds_nothing(tmp_path):
    out = tmp_path / "fuzz"
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "fuzz.py"), "--mutants", "1", "--seed", "7",
                             "--minutes", "2", "--out", str(out)], capture_output=True, text=True, timeout=600,
                            cwd=ROOT)
    report = json.loads((out / "report.json").read_text())
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert all(s["mutants"] >= 1 and s["failures"] == 0 for s in report["formats"].values()), report
    assert sum(s["clean"] for s in report["formats"].values()) > 0
