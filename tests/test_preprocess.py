"""Preprocessing writes exactly what torch-rnn's preprocess.py would."""

from __future__ import annotations

import json
import random
import re

import h5py
import numpy as np
import pytest

from charrnn import Vocabulary, preprocess, utf8
from charrnn.errors import CharRNNError

from .conftest import SPEECHES, assert_one_line_error


def torch_rnn_oracle(text, val_frac=0.1, test_frac=0.1):
    """torch-rnn's algorithm, written out as its per-character loop (the reference)."""
    token_to_idx = {}
    for ch in text:
        if ch not in token_to_idx:
            token_to_idx[ch] = len(token_to_idx) + 1
    ids = [token_to_idx[ch] for ch in text]
    n = len(ids)
    val, test = int(val_frac * n), int(test_frac * n)
    train = n - val - test
    dtype = np.uint8 if len(token_to_idx) <= 255 else np.uint32
    splits = {"train": ids[:train], "val": ids[train:train + val], "test": ids[train + val:]}
    return token_to_idx, splits, dtype


def read_outputs(h5_path, json_path):
    with h5py.File(h5_path, "r") as f:
        splits = {k: f[k][()] for k in ("train", "val", "test")}
    return splits, json.loads(json_path.read_text())


@pytest.mark.parametrize("text", [
    "hello world\nhello there\n" * 10,
    "naïve café — 日本語のテキスト ✓ 🙂\r\n" * 7,
    "ab" * 3 + "\ufeffbom inside",
])
@pytest.mark.parametrize("fracs", [(0.1, 0.1), (0.25, 0.0), (0.0, 0.0), (0.3, 0.2)])
def test_output_matches_torch_rnn(tmp_path, text, fracs):
    path = tmp_path / "in.txt"
    path.write_bytes(text.encode("utf-8"))
    result = preprocess(path, val_frac=fracs[0], test_frac=fracs[1])
    token_to_idx, expected, dtype = torch_rnn_oracle(text, *fracs)
    splits, vocab_json = read_outputs(result.output_h5, result.output_json)
    for name in expected:
        assert splits[name].dtype == dtype
        assert splits[name].tolist() == expected[name]
    assert vocab_json["token_to_idx"] == token_to_idx
    assert vocab_json["idx_to_token"] == {str(i): ch for ch, i in token_to_idx.items()}
    assert list(vocab_json) == ["token_to_idx", "idx_to_token"]


def test_default_output_paths(tmp_path):
    path = tmp_path / "speech.txt"
    path.write_text("abc abc\n" * 20)
    result = preprocess(path)
    assert result.output_h5 == tmp_path / "speech.h5" and result.output_h5.exists()
    assert result.output_json == tmp_path / "speech.json" and result.output_json.exists()


def test_large_vocabulary_uses_uint32(tmp_path):
    text = "".join(chr(0x4E00 + i) for i in range(300)) * 3
    path = tmp_path / "cjk.txt"
    path.write_text(text, encoding="utf-8")
    result = preprocess(path)
    splits, vocab_json = read_outputs(result.output_h5, result.output_json)
    assert len(vocab_json["idx_to_token"]) == 300
    assert all(s.dtype == np.uint32 for s in splits.values())
    assert Vocabulary.load(result.output_json).decode(np.concatenate(list(splits.values()))) == text


def test_bytes_mode_names_high_bytes(tmp_path):
    data = bytes([104, 105, 200, 10, 255, 0, 104])
    path = tmp_path / "raw.bin"
    path.write_bytes(data * 5)
    result = preprocess(path, encoding="bytes", val_frac=0, test_frac=0)
    splits, vocab_json = read_outputs(result.output_h5, result.output_json)
    assert vocab_json["idx_to_token"] == {"1": "h", "2": "i", "3": "[200]", "4": "\n", "5": "[255]", "6": "\x00"}
    vocab = Vocabulary.load(result.output_json)
    assert vocab.byte_mode and vocab.decode(splits["train"]) == data * 5


def test_chunked_reading_keeps_multibyte_characters_whole(tmp_path):
    text = ("é日🙂x" * 500) + "end"
    path = tmp_path / "multi.txt"
    path.write_text(text, encoding="utf-8")
    whole = preprocess(path, tmp_path / "a.h5", tmp_path / "a.json")
    chunked = preprocess(path, tmp_path / "b.h5", tmp_path / "b.json", chunk_bytes=7)
    a, ja = read_outputs(whole.output_h5, whole.output_json)
    b, jb = read_outputs(chunked.output_h5, chunked.output_json)
    assert ja == jb
    for name in a:
        assert np.array_equal(a[name], b[name])


def test_lowercase(tmp_path):
    path = tmp_path / "mixed.txt"
    path.write_text("Hello WORLD\n" * 10)
    result = preprocess(path, lowercase=True)
    assert set(result.vocab.decode(range(1, len(result.vocab) + 1))) == set("helo wrd\n")


@pytest.mark.skipif(not SPEECHES.exists(), reason="shared/data/speeches.txt is absent")
def test_speeches_corpus(tmp_path):
    text = SPEECHES.read_bytes().decode("utf-8")
    result = preprocess(SPEECHES, tmp_path / "s.h5", tmp_path / "s.json")
    token_to_idx, expected, _ = torch_rnn_oracle(text)
    splits, vocab_json = read_outputs(result.output_h5, result.output_json)
    assert vocab_json["token_to_idx"] == token_to_idx
    assert {k: len(v) for k, v in splits.items()} == {k: len(v) for k, v in expected.items()}
    assert splits["val"].tolist() == expected["val"]


def test_cli_prints_summary(cli, tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("some text\n" * 100)
    result = cli("preprocess", "--input-txt", path)
    assert result.code == 0
    assert "vocabulary: 8 tokens" in result.out and "train 800" in result.out and "MB/s" in result.out
    assert cli("preprocess", "--input-txt", path, "--quiet").out == ""


# -- bad input ----------------------------------------------------------------------------------
def test_missing_file(cli, tmp_path):
    assert_one_line_error(cli("preprocess", "--input-txt", tmp_path / "nope.txt"), "not found")


def test_directory_instead_of_file(cli, tmp_path):
    assert_one_line_error(cli("preprocess", "--input-txt", tmp_path), "directory")


def test_empty_corpus(cli, tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("")
    assert_one_line_error(cli("preprocess", "--input-txt", path), "empty")
    assert not path.with_suffix(".h5").exists()


def test_invalid_utf8_names_the_byte_and_suggests_bytes(cli, tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"good text " * 3 + b"\xff\xfe bad")
    assert_one_line_error(cli("preprocess", "--input-txt", path), "byte 30", "--encoding bytes")


def test_binary_file_is_refused(cli, tmp_path):
    path = tmp_path / "bin.txt"
    path.write_bytes(b"abc\x00\x00\x00def")
    assert_one_line_error(cli("preprocess", "--input-txt", path), "binary")


def test_unknown_codec(cli, tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("abc")
    assert_one_line_error(cli("preprocess", "--input-txt", path, "--encoding", "klingon-8"), "unknown encoding")


@pytest.mark.parametrize("val,test", [("0.6", "0.4"), ("-0.1", "0.1"), ("0.5", "0.7")])
def test_bad_fractions(cli, tmp_path, val, test):
    path = tmp_path / "c.txt"
    path.write_text("abc" * 10)
    assert_one_line_error(cli("preprocess", "--input-txt", path, "--val-frac", val, "--test-frac", test), "frac")


def test_failure_leaves_existing_outputs_untouched(cli, tmp_path):
    good = tmp_path / "c.txt"
    good.write_text("abc\n" * 50)
    assert cli("preprocess", "--input-txt", good).code == 0
    before = (good.with_suffix(".h5").read_bytes(), good.with_suffix(".json").read_bytes())
    good.write_bytes(b"abc\n" * 10 + b"\xc3")  # now invalid UTF-8 at the end
    assert cli("preprocess", "--input-txt", good).code != 0
    assert (good.with_suffix(".h5").read_bytes(), good.with_suffix(".json").read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.h5", "c.json", "c.txt"]


# -- UTF-8 mapped from its bytes (charrnn.utf8) must give exactly torch-rnn's output -------------------
TRICKY = {
    "split multi-byte": "é日🙂x" * 40 + "end",
    "bom and crlf": "\ufeffSPEECH 1\r\n\r\n...Thank you so much.  That’s so nice – isn’t he…\r\n" * 6,
    "emoji and edges": "a\x7f\x80\u07ff\u0800\uffff\U00010000\U0010ffff🙂👍🏽 z\n" * 9,
    "cyrillic and latin": "Привет, мир! Hello — «ёлка» Ёж и ёж; the quick Лиса.\n" * 12,
    "mostly ascii": "plain words and more words " * 30 + "naïve" + " and words" * 30 + "—",
    "late newcomers": "abc " * 200 + "Ж" + "abc " * 50 + "😀" * 3 + "é",
}


def encode_with(tmp_path, text: str, tag: str, **options):
    path = tmp_path / f"{tag}.txt"
    path.write_bytes(text.encode("utf-8"))
    result = preprocess(path, tmp_path / f"{tag}.h5", tmp_path / f"{tag}.json", **options)
    return read_outputs(result.output_h5, result.output_json)


@pytest.mark.parametrize("name", TRICKY)
@pytest.mark.parametrize("chunk_bytes", [1, 2, 3, 5, 64, 1 << 20])
def test_utf8_bytes_path_matches_torch_rnn(tmp_path, name, chunk_bytes):
    text = TRICKY[name]
    token_to_idx, expected, dtype = torch_rnn_oracle(text)
    splits, vocab_json = encode_with(tmp_path, text, "t", chunk_bytes=chunk_bytes)
    assert vocab_json["token_to_idx"] == token_to_idx
    for split in expected:
        assert splits[split].dtype == dtype and splits[split].tolist() == expected[split]


@pytest.mark.parametrize("chunk_bytes", [3, 7, 1 << 20])
def test_utf8_vocabulary_past_255_tokens(tmp_path, chunk_bytes):
    # ids outgrow uint8 mid-corpus: the job starts again with uint32 and still matches torch-rnn
    many = "".join(chr(0x4E00 + 7 * i) + chr(0x410 + i % 64) for i in range(300))
    text = "ascii first, then many characters: " + many
    token_to_idx, expected, dtype = torch_rnn_oracle(text * 2)
    splits, vocab_json = encode_with(tmp_path, text * 2, "big", chunk_bytes=chunk_bytes)
    assert dtype == np.uint32 and vocab_json["token_to_idx"] == token_to_idx
    assert {k: v.tolist() for k, v in splits.items()} == expected


@pytest.mark.parametrize("text", [
    "Ёлка И ЖУК Élan ÇA va. DŽungla ǅ\r\n" * 5,
    "ΟΔΟΣ ΣΑΣ ΣΟΦΟΣ.\n" * 3,   # final sigma depends on what follows: the decoding path handles it
    "İstanbul Ankara\n" * 3,   # 'İ'.lower() is two code points
])
def test_utf8_lowercase_matches_str_lower(tmp_path, text):
    token_to_idx, expected, _ = torch_rnn_oracle(text.lower())
    splits, vocab_json = encode_with(tmp_path, text, "low", lowercase=True)
    assert vocab_json["token_to_idx"] == token_to_idx
    assert {k: v.tolist() for k, v in splits.items()} == expected


@pytest.mark.parametrize("chunk_bytes", [2, 5, 1 << 20])
def test_utf8_known_vocabulary_and_unknown_char(tmp_path, chunk_bytes):
    first = "Мама мыла раму. " * 10
    _, known_json = encode_with(tmp_path, first, "known")
    (tmp_path / "known.json").write_text(json.dumps(known_json))
    text = "Мама мыла ёлку — и раму!" * 4
    splits, vocab_json = encode_with(tmp_path, text, "new", input_json=tmp_path / "known.json", unknown_char=" ",
                                     chunk_bytes=chunk_bytes, val_frac=0, test_frac=0)
    ids = {ch: i for ch, i in known_json["token_to_idx"].items()}
    assert vocab_json == known_json
    assert splits["train"].tolist() == [ids.get(ch, ids[" "]) for ch in text]


@pytest.mark.parametrize("chunk_bytes", [3, 1 << 20])
def test_utf8_vocabulary_from_the_training_split(tmp_path, chunk_bytes):
    text = "да нет да нет " * 20 + "ёж😀 да"  # 'ё', 'ж' and the emoji first appear in the test split
    splits, vocab_json = encode_with(tmp_path, text, "tr", vocab_from="train", unknown_char=" ",
                                     chunk_bytes=chunk_bytes, val_frac=0, test_frac=0.1)
    train_size = len(text) - int(0.1 * len(text))
    train_vocab, _, _ = torch_rnn_oracle(text[:train_size], 0, 0)
    assert vocab_json["token_to_idx"] == train_vocab
    assert splits["test"].tolist() == [train_vocab.get(ch, train_vocab[" "]) for ch in text[train_size:]]


@pytest.mark.parametrize("chunk_bytes", [4, 1 << 20])
def test_utf8_as_bytes_mode(tmp_path, chunk_bytes):
    data = TRICKY["cyrillic and latin"].encode("utf-8")
    path = tmp_path / "b.txt"
    path.write_bytes(data)
    result = preprocess(path, val_frac=0, test_frac=0, encoding="bytes", chunk_bytes=chunk_bytes)
    splits, _ = read_outputs(result.output_h5, result.output_json)
    assert result.vocab.byte_mode and result.vocab.decode(splits["train"]) == data


@pytest.mark.parametrize("bad", [
    b"\x80 stray continuation", b"ok \xc3\xa9\xa9 one too many", b"ascii then \xc3", b"\xe2\x80 cut",
    b"overlong \xc0\x80", b"overlong \xe0\x80\x80", b"surrogate \xed\xa0\x80", b"too big \xf4\x90\x80\x80",
    b"never \xff", b"lead then ascii \xe2A\x80", b"4-byte \xf0\x9f\x99 cut",
])
@pytest.mark.parametrize("chunk_bytes", [3, 1 << 20])
@pytest.mark.parametrize("script", ["ок ", "日本語"])  # two-byte text is scanned, CJK decoded by Python
def test_invalid_utf8_names_the_first_bad_byte(cli, tmp_path, bad, chunk_bytes, script):
    data = script.encode("utf-8") * 5 + bad + " конец".encode("utf-8")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        expected = f"at byte {exc.start} ({exc.reason})"
    path = tmp_path / "bad.txt"
    path.write_bytes(data)
    with pytest.raises(CharRNNError, match=re.escape(expected)):
        preprocess(path, chunk_bytes=chunk_bytes)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.txt"]
    assert_one_line_error(cli("preprocess", "--input-txt", path), expected, "--encoding bytes")


def test_utf8_codec_aliases_give_the_same_files(tmp_path):
    path = tmp_path / "c.txt"
    path.write_bytes(TRICKY["bom and crlf"].encode("utf-8"))
    outputs = []
    for encoding in ("utf-8", "UTF8", "latin-1"):
        result = preprocess(path, tmp_path / f"{encoding}.h5", tmp_path / f"{encoding}.json", encoding=encoding)
        outputs.append(read_outputs(result.output_h5, result.output_json))
    (a, ja), (b, jb), (c, jc) = outputs
    assert ja == jb and all(np.array_equal(a[k], b[k]) for k in a)
    assert len(jc["token_to_idx"]) > len(ja["token_to_idx"])  # latin-1 reads each byte as a character


def test_utf8_scanner_agrees_with_python_on_random_bytes():
    # charrnn.utf8 on its own, in blocks far smaller than in use: every character's value, and
    # exactly the byte strings Python's strict codec refuses
    rng = random.Random(0)
    alphabet = "aZ \r\n\x7f\x80é\u07ff\u0800—’\ufeffЖё\uffff\U00010000🙂\U0010ffff"
    pieces = [b"A", b"\x80", b"\xbf", b"\xc0", b"\xc2", b"\xdf", b"\xe0", b"\xed", b"\xa0", b"\x9f", b"\xef",
              b"\xf0", b"\xf4", b"\x90", b"\x8f", b"\xf5", b"\xff"]
    old_block, utf8.BLOCK = utf8.BLOCK, 8
    try:
        for _ in range(300):
            text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 60)))
            table = utf8.Table(np.uint32)
            known = sorted(set(text))[::2]
            table.set([ord(c) for c in known], [ord(c) for c in known])
            data = text.encode("utf-8")
            values = utf8.Scanner(table).scan(data, 0, len(data), lambda points, where, starts: None)
            assert values.tolist() == [ord(c) if c in known else 0 for c in text]
        for _ in range(3000):
            data = b"".join(rng.choice(pieces) for _ in range(rng.randint(1, 8)))
            try:
                data.decode("utf-8")
                valid = True
            except UnicodeDecodeError:
                valid = False
            table = utf8.Table(np.uint8)
            try:
                utf8.Scanner(table).scan(data, 0, len(data), lambda points, where, starts: table.set(points, 1))
                assert valid, data
            except utf8.InvalidUtf8:
                assert not valid, data
    finally:
        utf8.BLOCK = old_block
