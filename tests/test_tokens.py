"""Word tokens, end-of-document tokens and lists of documents (issue 24)."""

from __future__ import annotations

import json
import random

import h5py
import numpy as np
import pytest

from charrnn import preprocess
from charrnn.vocab import Vocabulary
from .conftest import SHAKESPEARE, TINY, make_corpus


def all_ids(h5) -> np.ndarray:
    with h5py.File(h5) as f:
        return np.concatenate([f[s][:] for s in ("train", "val", "test")])


def make_names(n: int = 1500, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    syllables = "ka ri mo na el is an to ve lu sa or mi da be".split()
    names: set[str] = set()
    while len(names) < n:
        names.add("".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))).capitalize())
    return sorted(names, key=lambda _: rng.random())


@pytest.fixture
def words_txt(tmp_path):
    path = tmp_path / "w.txt"
    path.write_text(make_corpus(20_000) + "Ünïcödé 'quotes' -- and    spaces\n\n\nend", encoding="utf-8")
    return path


# -- preprocessing ------------------------------------------------------------------------------------
def test_words_decode_to_the_corpus_and_shorten_it(words_txt):
    result = preprocess(words_txt, tokens="words", max_vocab=40)
    vocab = Vocabulary.load(result.output_json)
    ids = all_ids(result.output_h5)
    text = words_txt.read_text(encoding="utf-8")
    assert vocab.decode(ids) == text
    assert len(ids) < 0.6 * len(text)
    assert len(set(text)) + 20 < len(vocab) <= len(set(text)) + 40  # only repeated segments become words
    assert vocab.has_words and "the" in vocab.tokens and " " in [vocab.token_name(t) for t in vocab.tokens]
    assert np.array_equal(vocab.encode(text), ids)  # --start-text is encoded the way the corpus was
    assert json.loads(result.output_json.read_text())["token_type"] == "words"


def test_words_do_not_depend_on_the_chunk_size(words_txt, tmp_path):
    whole = preprocess(words_txt, tokens="words", max_vocab=30)
    small = preprocess(words_txt, tmp_path / "s.h5", tmp_path / "s.json", tokens="words", max_vocab=30,
                       chunk_bytes=37)
    assert np.array_equal(all_ids(whole.output_h5), all_ids(small.output_h5))
    assert whole.output_json.read_text() == small.output_json.read_text()


def test_a_long_run_is_cut_into_pieces_and_still_round_trips(tmp_path):
    path = tmp_path / "long.txt"
    path.write_text(("a" * 100 + " " * 70 + "\n") * 30, encoding="utf-8")
    result = preprocess(path, tokens="words", max_vocab=10)
    vocab = Vocabulary.load(result.output_json)
    assert max(len(vocab.token_name(t)) for t in vocab.tokens) <= 32
    assert vocab.decode(all_ids(result.output_h5)) == path.read_text()


def test_documents_put_one_end_token_between_lines(tmp_path):
    path = tmp_path / "names.txt"
    path.write_text("Anna\nBob\n\n\nCarla\n", encoding="utf-8")
    result = preprocess(path, documents="lines", val_frac=0, test_frac=0)
    data = json.loads(result.output_json.read_text())
    assert data["end_token"] == "<END>" and data["idx_to_token"][str(data["end_token_idx"])] == "<END>"
    assert data["documents"] == "lines"
    vocab = Vocabulary.load(result.output_json)
    ids = all_ids(result.output_h5)
    assert list(ids == vocab.end_token).count(True) == 3  # the run of newlines is one separator
    assert vocab.decode(ids) == "Anna\nBob\nCarla\n"
    assert "\n" not in [vocab.token_name(t) for t in vocab.tokens]


def test_blank_lines_documents_keep_single_newlines(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("one\ntwo\n\nthree\nfour\n\n\n\nfive", encoding="utf-8")
    result = preprocess(path, documents="blank-lines", val_frac=0, test_frac=0, tokens="words", max_vocab=5)
    vocab = Vocabulary.load(result.output_json)
    ids = all_ids(result.output_h5)
    assert list(ids).count(vocab.end_token) == 2
    assert vocab.decode(ids) == "one\ntwo\n\nthree\nfour\n\nfive"


def test_character_preprocessing_is_unchanged_by_default(words_txt, tmp_path):
    result = preprocess(words_txt)
    data = json.loads(result.output_json.read_text())
    assert set(data) == {"token_to_idx", "idx_to_token"}
    assert all(len(name) == 1 for name in data["idx_to_token"].values())


@pytest.mark.parametrize("args, message", [
    (["--tokens", "words", "--max-vocab", "0"], "--max-vocab must be positive"),
    (["--tokens", "words", "--max-vocab", "-3"], "--max-vocab must be positive"),
    (["--documents", "lines"], "one document"),
    (["--tokens", "words", "--encoding", "bytes"], "--encoding"),
])
def test_bad_token_options_are_one_line_and_write_nothing(cli, tmp_path, args, message):
    path = tmp_path / "one.txt"
    path.write_text("a single document without a newline in it", encoding="utf-8")
    result = cli("preprocess", "--input-txt", path, *args)
    assert result.code != 0 and result.err.count("\n") == 1 and message in result.err, result.err
    assert result.err.startswith("charrnn: error: ")
    assert not (tmp_path / "one.h5").exists() and not (tmp_path / "one.json").exists()


def test_a_vocabulary_whose_end_token_is_missing_is_refused(cli, tmp_path):
    path = tmp_path / "v.json"
    path.write_text(json.dumps({"idx_to_token": {"1": "a", "2": "b"}, "end_token": "<END>", "end_token_idx": 2}))
    result = cli("preprocess", "--input-txt", tmp_path / "v.json", "--input-json", path,
                 "--output-h5", tmp_path / "o.h5", "--output-json", tmp_path / "o.json")
    assert result.code != 0 and "end token <END> is missing" in result.err and result.err.count("\n") == 1
    assert not (tmp_path / "o.h5").exists() and not (tmp_path / "o.json").exists()


def test_vocabularies_round_trip_through_json_and_checkpoints(words_txt):
    from charrnn.checkpoint.schema import _vocab
    from charrnn.config import ModelConfig

    vocab = preprocess(words_txt, tokens="words", max_vocab=20, documents="lines").vocab
    assert Vocabulary.from_json_dict(json.loads(json.dumps(vocab.to_json_dict()))) == vocab
    config = ModelConfig(vocab_size=len(vocab))
    assert _vocab(lambda field, why: ValueError(field, why), vocab.to_checkpoint_dict(), config) == vocab


# -- training, evaluation, sampling --------------------------------------------------------------------
@pytest.fixture(scope="module")
def word_model(tmp_path_factory):
    from charrnn import train
    tmp = tmp_path_factory.mktemp("words")
    path = tmp / "w.txt"
    path.write_text(make_corpus(20_000), encoding="utf-8")
    result = preprocess(path, tokens="words", max_vocab=40)
    run = train(**{**TINY, "input_h5": str(result.output_h5), "input_json": str(result.output_json),
                   "checkpoint_name": str(tmp / "cv" / "w"), "quiet": True, "max_iters": 10, "checkpoint_every": 5})
    return tmp, result, run.checkpoint


def test_a_word_model_evaluates_per_token_and_per_character(cli, word_model):
    from charrnn.evaluation import evaluate_checkpoint
    tmp, data, checkpoint = word_model
    r = evaluate_checkpoint(checkpoint)
    assert r.chars_per_token > 1.5
    assert r.loss_per_char == pytest.approx(r.loss / r.chars_per_token)
    out = cli("eval", "--checkpoint", checkpoint)
    assert out.code == 0 and "nats/token" in out.out and "bits/char" in out.out and "chars/token" in out.out


def test_a_word_model_resumes(cli, word_model):
    tmp, data, checkpoint = word_model
    out = cli("train", "--resume", tmp / "cv" / "w_5.pt", "--max-iters", "8", "--quiet")
    assert out.code == 0, out.err
    assert (tmp / "cv" / "w_8.pt").exists()


def test_a_word_model_samples_length_in_characters(cli, word_model):
    from charrnn.sampling.sampler import Sampler
    tmp, data, checkpoint = word_model
    sampler = Sampler.from_checkpoint(checkpoint)
    for length in (1, 7, 60):
        assert len(sampler.complete(length, seed=3)) == length
    assert len(sampler.complete(60, "The quick", seed=3)) == 60
    texts = sampler.generate_many(3, 40, "The", seed=1)
    assert [len(t) for t in texts] == [40] * 3 and all(t.startswith("The") for t in texts)
    out = cli("sample", "--checkpoint", checkpoint, "--length", "50", "--start-text", "The lazy", "--seed", "2")
    assert out.code == 0 and out.out.startswith("The lazy") and len(out.out) == 51


# -- documents ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def names_model(tmp_path_factory):
    from charrnn import train
    tmp = tmp_path_factory.mktemp("names")
    names = make_names()
    path = tmp / "names.txt"
    path.write_text("\n".join(names) + "\n", encoding="utf-8")
    data = preprocess(path, documents="lines")
    run = train(**{**TINY, "rnn_size": 48, "wordvec_size": 16, "batch_size": 16, "seq_length": 32,
                   "input_h5": str(data.output_h5), "input_json": str(data.output_json), "learning_rate": 0.01,
                   "checkpoint_name": str(tmp / "cv" / "names"), "quiet": True, "max_iters": 150})
    return tmp, data, run.checkpoint, names


def train_names(data, names) -> set[str]:
    vocab = Vocabulary.load(data.output_json)
    with h5py.File(data.output_h5) as f:
        text = vocab.decode(f["train"][:])
    return set(text.split("\n")) & set(names)


@pytest.mark.slow
def test_a_hundred_new_distinct_names(cli, names_model):
    tmp, data, checkpoint, names = names_model
    out = cli("sample", "--checkpoint", checkpoint, "--documents", "100", "--novel", "--unique", "--seed", "1")
    assert out.code == 0, out.err
    listed = out.out.rstrip("\n").split("\n")
    assert len(listed) == 100 and len(set(listed)) == 100 and all(listed)
    assert not set(listed) & train_names(data, names)
    assert "100 documents" in out.err and "rejected" in out.err
    plain = cli("sample", "--checkpoint", checkpoint, "--documents", "100", "--seed", "1")
    assert plain.code == 0
    assert set(plain.out.split("\n")) & train_names(data, names)  # without --novel the model does repeat some


@pytest.mark.slow
def test_documents_are_primed_batched_and_reproducible(cli, names_model):
    tmp, data, checkpoint, names = names_model
    one = cli("sample", "--checkpoint", checkpoint, "--documents", "20", "--start-text", "Ka", "--seed", "4",
              "--num-samples", "7", "--length", "12")
    two = cli("sample", "--checkpoint", checkpoint, "--documents", "20", "--start-text", "Ka", "--seed", "4",
              "--num-samples", "7", "--length", "12", "-o", tmp / "list.txt")
    docs = one.out.rstrip("\n").split("\n")
    assert one.code == 0 and len(docs) == 20 and all(d.startswith("Ka") and len(d) <= 12 for d in docs)
    assert (tmp / "list.txt").read_text().split("\n") == docs


def test_novel_index_finds_whole_training_documents(names_model):
    from charrnn.sampling.documents import TrainingDocuments
    tmp, data, checkpoint, names = names_model
    index = TrainingDocuments.from_file(data.output_h5, data.vocab)
    seen = sorted(train_names(data, names))
    assert all(name in index for name in seen[:50])
    assert seen[0] + "x" not in index and seen[0][:-1] not in index and "Zzz" not in index


def test_novel_index_does_not_depend_on_its_block_size(names_model, monkeypatch):
    from charrnn.sampling import documents
    tmp, data, checkpoint, names = names_model
    whole = documents.TrainingDocuments.from_file(data.output_h5, data.vocab)
    monkeypatch.setattr(documents, "HASH_BLOCK", 7)
    blocks = documents.TrainingDocuments.from_file(data.output_h5, data.vocab)
    assert np.array_equal(whole.hashes, blocks.hashes) and len(whole) > 1000


@pytest.mark.parametrize("args, message", [
    (["--novel", "--input-h5", "missing.h5"], "--novel needs the training data"),
    (["--unique"], "go with --documents"),
])
def test_document_errors_are_one_line_and_write_nothing(cli, names_model, args, message):
    tmp, data, checkpoint, names = names_model
    documents = [] if "--unique" in args else ["--documents", "5"]
    out = cli("sample", "--checkpoint", checkpoint, *documents, *args, "-o", tmp / "none.txt")
    assert out.code != 0 and message in out.err and out.err.count("\n") == 1, out.err
    assert not (tmp / "none.txt").exists()


def test_documents_need_a_model_with_an_end_token(cli, word_model):
    tmp, data, checkpoint = word_model
    out = cli("sample", "--checkpoint", checkpoint, "--documents", "5", "-o", tmp / "none.txt")
    assert out.code != 0 and "no end token" in out.err and out.err.count("\n") == 1
    assert not (tmp / "none.txt").exists()


@pytest.mark.skipif(not SHAKESPEARE.exists(), reason="needs ../shared/data/tiny-shakespeare.txt")
def test_words_on_tiny_shakespeare_round_trip(tmp_path):
    result = preprocess(SHAKESPEARE, tmp_path / "s.h5", tmp_path / "s.json", tokens="words", max_vocab=300)
    vocab = Vocabulary.load(result.output_json)
    assert vocab.decode(all_ids(result.output_h5)) == SHAKESPEARE.read_text(encoding="utf-8")


def test_cli_preprocess_words(cli, words_txt, tmp_path):
    out = cli("preprocess", "--input-txt", words_txt, "--tokens", "words", "--max-vocab", "25",
              "--output-h5", tmp_path / "c.h5", "--output-json", tmp_path / "c.json")
    assert out.code == 0 and "25 words" in out.out and "characters per token" in out.out
    assert len(Vocabulary.load(tmp_path / "c.json")) == len(set(words_txt.read_text(encoding="utf-8"))) + 25


# -- the server -----------------------------------------------------------------------------------------
def serve_client(checkpoint):
    pytest.importorskip("starlette")
    pytest.importorskip("httpx")
    from starlette.testclient import TestClient

    from charrnn.serve import create_app
    return TestClient(create_app([checkpoint], log=lambda m: None, max_tokens=200, max_prompt=50, max_batch=8,
                                 max_queue=16))


def test_the_server_stops_a_completion_at_the_end_token(names_model):
    tmp, data, checkpoint, names = names_model
    with serve_client(checkpoint) as client:
        for stream in (False, True):
            r = client.post("/v1/completions", json={"prompt": "Ka", "max_tokens": 200, "n": 6, "seed": 5,
                                                     "stream": stream})
            assert r.status_code == 200, r.text
            if stream:
                chunks = [json.loads(line[6:]) for line in r.text.splitlines()
                          if line.startswith("data: {")]
                finish = [c["finish_reason"] for chunk in chunks for c in chunk["choices"] if c["finish_reason"]]
                assert finish == ["stop"] * 6
                continue
            choices = r.json()["choices"]
            for choice in choices:  # "Ka" may be a whole name: an empty completion is a stop too
                assert choice["finish_reason"] == "stop" and "\n" not in choice["text"]
                assert len(choice["text"]) < 60
            assert any(choice["text"] for choice in choices)


def test_the_server_serves_a_word_model(word_model):
    tmp, data, checkpoint = word_model
    with serve_client(checkpoint) as client:
        r = client.post("/v1/completions", json={"prompt": "The quick", "max_tokens": 30, "seed": 1,
                                                 "logprobs": 2})
        assert r.status_code == 200, r.text
        choice = r.json()["choices"][0]
        assert choice["finish_reason"] == "length" and choice["text"]
        assert all(isinstance(t, str) and t for t in choice["logprobs"]["tokens"])
