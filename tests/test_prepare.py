"""prepare-model on the tiny offline checkpoints: byte-level BPE (tied), Metaspace BPE (untied head),
and a Qwen2.5-style padded vocabulary. Each preparation runs once per module (about a second)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from rftt_plugin.cli import main as cli_main
from rftt_plugin.prepare import MANIFEST_NAME, PrepareError, prepare_model, rows_needed
from rftt_plugin.tag_ids import TagIds
from rftt_plugin.tokens import TAG_STRINGS, TAGS, FunctionalTag, Step, render

T = FunctionalTag
SAMPLE = render([Step(T.CLARIFY, "Find 2 + 3."), Step(T.NEXT_STEP, "2 + 3 = 5"),
                 Step(T.OUTPUT, "The answer is \\boxed{5}")])


def _prepare(base: Path, out: Path, **kwargs):
    return prepare_model(base, out, progress=False, **kwargs)


@pytest.fixture(scope="module")
def prepared(request, tmp_path_factory):
    """Lazily prepared copies of the three tiny checkpoints: name -> (base dir, out dir, result)."""
    cache: dict[str, tuple[Path, Path, object]] = {}

    def get(name: str):
        if name not in cache:
            base = Path(request.getfixturevalue(name))
            out = tmp_path_factory.mktemp(f"prep_{name}") / "ckpt"
            cache[name] = (base, out, _prepare(base, out))
        return cache[name]

    return get


ALL = ["tiny_model_dir", "tiny_llama_dir", "tiny_padded_dir"]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


def _expected_pieces(base_tok, s: str) -> list[int]:
    """The tag's pieces in running text, computed independently of the implementation: the
    Metaspace tokenizer prefixes a lone word-start marker when the string is encoded on its own."""
    ids = base_tok.encode(s, add_special_tokens=False)
    if base_tok.convert_ids_to_tokens(ids[0]) == "\u2581":
        ids = ids[1:]
    assert len(ids) > 1
    return ids


# ------------------------------------------------------------------ the contract on all three

@pytest.mark.parametrize("name", ALL)
def test_every_tag_is_one_normal_token_and_round_trips(prepared, name):
    base, out, result = prepared(name)
    base_tok, tok = AutoTokenizer.from_pretrained(str(base)), AutoTokenizer.from_pretrained(str(out))
    assert result.written and list(result.token_ids) == list(TAG_STRINGS)
    # new ids are appended after the original vocabulary, in tag order
    assert list(result.token_ids.values()) == list(range(len(base_tok), len(base_tok) + 16))
    assert len(tok) == len(base_tok) + 16
    for s, idx in result.token_ids.items():
        assert tok.encode(s, add_special_tokens=False) == [idx]
        assert idx not in tok.all_special_ids
        assert tok.decode([idx]) == s and tok.decode([idx], skip_special_tokens=True) == s
    ids = tok.encode(SAMPLE, add_special_tokens=False)
    assert tok.decode(ids) == SAMPLE and tok.decode(ids, skip_special_tokens=True) == SAMPLE
    assert {result.token_ids[t.open] for t in (T.CLARIFY, T.NEXT_STEP, T.OUTPUT)} <= set(ids)
    # ordinary text still tokenises as before
    plain = "Solve for x: 2x + 4 = 10."
    assert tok.encode(plain, add_special_tokens=False) == base_tok.encode(plain, add_special_tokens=False)


@pytest.mark.parametrize("name", ALL)
def test_tag_vocabulary_added_mode(prepared, name):
    _, out, result = prepared(name)
    tok = AutoTokenizer.from_pretrained(str(out))
    vocab = TagIds.from_tokenizer(tok)
    assert vocab.mode == "added" and vocab.check(tok) == []
    # a step stops on any tag id: the 8 closing ones end it, an opening one inside it is an error
    assert vocab.stop_token_ids == tuple(result.token_ids[t.close] for t in TAGS) + tuple(
        result.token_ids[t.open] for t in TAGS)
    assert vocab.stop_strings == ()
    for tag in TAGS:
        assert vocab.open_ids[tag] == (result.token_ids[tag.open],)
        assert vocab.tag_for_open_id(result.token_ids[tag.open]) is tag
        assert vocab.tag_for_close_id(result.token_ids[tag.close]) is tag
    assert vocab.tag_for_open_id(result.token_ids[T.OUTPUT.close]) is None
    assert tok.decode(list(vocab.newline_ids)) == "\n"
    # context building: "<next_step>" + newline ids is exactly how the tokenizer encodes that text
    assert tok.encode("<next_step>\n", add_special_tokens=False) == [*vocab.open_ids[T.NEXT_STEP], *vocab.newline_ids]


@pytest.mark.parametrize("name", ALL)
def test_new_rows_are_the_mean_of_the_pieces(prepared, name):
    base, out, result = prepared(name)
    base_tok = AutoTokenizer.from_pretrained(str(base))
    old, new = _weights(base), _weights(out)
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    keys = ["model.embed_tokens.weight"] + (["lm_head.weight"] if "lm_head.weight" in old else [])
    assert ("lm_head.weight" in old) == (name == "tiny_llama_dir")  # the llama fixture has an untied head
    n_old = len(base_tok)
    for key in keys:
        assert torch.equal(new[key][:n_old], old[key][:n_old])  # existing rows untouched
        for s, idx in result.token_ids.items():
            pieces = _expected_pieces(base_tok, s)
            assert manifest["pieces"][s] == pieces
            assert torch.allclose(new[key][idx], old[key][pieces].mean(dim=0), atol=1e-6), (key, s)
    emb = new["model.embed_tokens.weight"]
    assert not torch.allclose(emb[result.token_ids["<clarify>"]], emb[result.token_ids["<verify>"]])


def test_padded_vocabulary_reuses_rows_without_resizing(prepared):
    base, out, result = prepared("tiny_padded_dir")
    base_tok = AutoTokenizer.from_pretrained(str(base))
    base_rows = _weights(base)["model.embed_tokens.weight"].shape[0]
    assert base_rows == AutoConfig.from_pretrained(str(base)).vocab_size > len(base_tok) + 16
    assert _weights(out)["model.embed_tokens.weight"].shape[0] == base_rows
    assert AutoConfig.from_pretrained(str(out)).vocab_size == base_rows
    assert not result.resized and result.rows_before == result.rows_after == base_rows
    assert max(result.token_ids.values()) < base_rows
    rows = json.loads((out / MANIFEST_NAME).read_text())["rows"]
    assert rows["strategy"] == "reused" and rows["reused_ids"] == sorted(result.token_ids.values())
    assert "reused spare rows" in result.summary()


@pytest.mark.parametrize("name", ["tiny_model_dir", "tiny_llama_dir"])
def test_unpadded_vocabulary_is_resized_to_a_multiple_of_64(prepared, name):
    base, out, result = prepared(name)
    base_tok = AutoTokenizer.from_pretrained(str(base))
    rows = _weights(out)["model.embed_tokens.weight"].shape[0]
    assert result.resized and rows == result.rows_after
    assert rows % 64 == 0 and len(base_tok) + 16 <= rows < len(base_tok) + 16 + 64
    assert AutoConfig.from_pretrained(str(out)).vocab_size == rows
    if "lm_head.weight" in _weights(base):
        assert _weights(out)["lm_head.weight"].shape[0] == rows
    assert json.loads((out / MANIFEST_NAME).read_text())["rows"]["strategy"] == "resized"


def test_rows_needed_edges():
    assert rows_needed(64, [63]) == 64 and rows_needed(64, [64]) == 128 and rows_needed(10, []) == 10


@pytest.mark.parametrize("name", ALL)
def test_prepared_model_loads_generates_and_keeps_chat_template(prepared, name):
    _, out, result = prepared(name)
    tok = AutoTokenizer.from_pretrained(str(out))
    model = AutoModelForCausalLM.from_pretrained(str(out))
    rows = model.get_input_embeddings().weight.shape[0]
    assert model.config.vocab_size == rows == model.get_output_embeddings().weight.shape[0]
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is 2 + 3?"}], tokenize=False,
                                     add_generation_prompt=True) + "<next_step>\n"
    assert prompt.startswith("<|im_start|>user\n")
    ids = tok(prompt, add_special_tokens=False, return_tensors="pt")
    assert result.token_ids["<next_step>"] in ids["input_ids"][0].tolist()
    with torch.no_grad():
        logits = model(**ids).logits
        gen = model.generate(**ids, max_new_tokens=4, do_sample=False)
    assert logits.shape[-1] == rows and torch.isfinite(logits).all()
    assert gen.shape[1] > ids["input_ids"].shape[1]
    chat = tok.apply_chat_template([{"role": "user", "content": "q"}, {"role": "assistant", "content": SAMPLE}],
                                   tokenize=False)
    assert SAMPLE in chat


def test_manifest(prepared):
    base, out, result = prepared("tiny_model_dir")
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    from rftt_plugin import __version__

    assert manifest["tokens"] == result.token_ids and manifest["mode"] == "added"
    assert manifest["source_model"] == str(base) and manifest["init"] == "mean"
    assert manifest["plugin_version"] == __version__ and manifest["tied_embeddings"] is True
    assert manifest["rows"]["rows_after"] == result.rows_after


# ------------------------------------------------------------------ idempotency and refusals

def _snapshot(path: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in path.iterdir()}


def test_preparing_a_prepared_model_changes_nothing(prepared, tmp_path):
    base, out, first = prepared("tiny_model_dir")
    before = _snapshot(out)
    again = _prepare(out, tmp_path / "again")
    assert not again.written and again.out_dir is None and "already prepared" in again.message
    assert again.token_ids == first.token_ids
    assert not (tmp_path / "again").exists() and _snapshot(out) == before
    # re-running the same command (same source, same --out) is a no-op too
    rerun = _prepare(base, out)
    assert not rerun.written and "nothing was written" in rerun.message and _snapshot(out) == before


def test_random_init_is_seeded_and_differs_from_mean(prepared, tiny_model_dir, tmp_path):
    _, mean_out, result = prepared("tiny_model_dir")
    a = _prepare(tiny_model_dir, tmp_path / "a", init="random", seed=7)
    b = _prepare(tiny_model_dir, tmp_path / "b", init="random", seed=7)
    ids = list(a.token_ids.values())
    ra, rb = (_weights(tmp_path / d)["model.embed_tokens.weight"][ids] for d in "ab")
    rm = _weights(mean_out)["model.embed_tokens.weight"][ids]
    assert torch.equal(ra, rb) and not torch.allclose(ra, rm)
    base_std = _weights(tiny_model_dir)["model.embed_tokens.weight"].std().item()
    assert 0.5 * base_std < ra.std().item() < 2 * base_std
    assert json.loads((tmp_path / "a" / MANIFEST_NAME).read_text())["seed"] == 7


def _copy_with_tokenizer_change(base: Path, dest: Path, change) -> Path:
    shutil.copytree(base, dest)
    change(dest)
    return dest


def test_refuses_special_token_conflict(tiny_model_dir, tmp_path):
    def make_special(dest: Path):
        tok = AutoTokenizer.from_pretrained(str(dest))
        tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<verify>"]})
        tok.save_pretrained(dest)

    src = _copy_with_tokenizer_change(tiny_model_dir, tmp_path / "special", make_special)
    with pytest.raises(PrepareError, match=r"<verify> is already a special token"):
        _prepare(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_refuses_tag_in_base_vocabulary(tiny_model_dir, tmp_path):
    def put_in_vocab(dest: Path):
        data = json.loads((dest / "tokenizer.json").read_text())
        vocab = data["model"]["vocab"]
        vocab["<output>"] = max(vocab.values()) + 1
        (dest / "tokenizer.json").write_text(json.dumps(data))

    src = _copy_with_tokenizer_change(tiny_model_dir, tmp_path / "invocab", put_in_vocab)
    assert "<output>" in AutoTokenizer.from_pretrained(str(src)).get_vocab()
    with pytest.raises(PrepareError, match=r"<output> is a regular token of the base vocabulary"):
        _prepare(src, tmp_path / "out")


def test_refuses_partly_prepared_tokenizer(tiny_model_dir, tmp_path):
    def add_some(dest: Path):
        tok = AutoTokenizer.from_pretrained(str(dest))
        tok.add_tokens(["<verify>", "</verify>"])
        tok.save_pretrained(dest)

    src = _copy_with_tokenizer_change(tiny_model_dir, tmp_path / "partial", add_some)
    with pytest.raises(PrepareError, match="2 of the 16"):
        _prepare(src, tmp_path / "out")


def test_out_dir_rules(tiny_model_dir, tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "README.md").write_text("keep me")
    (out / "model-00001-of-00002.safetensors").write_bytes(b"stale shard")
    with pytest.raises(PrepareError, match="not empty"):
        _prepare(tiny_model_dir, out)
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "model-00001-of-00002.safetensors"]
    with pytest.raises(PrepareError, match="source checkpoint itself"):
        _prepare(tiny_model_dir, tiny_model_dir, overwrite=True)
    result = _prepare(tiny_model_dir, out, overwrite=True)
    names = {p.name for p in out.iterdir()}
    assert result.written and "README.md" in names and "model-00001-of-00002.safetensors" not in names
    assert {"model.safetensors", "config.json", "tokenizer.json", MANIFEST_NAME} <= names
    assert not [p for p in tmp_path.iterdir() if "rftt-tmp" in p.name]  # temporary directory cleaned up
    with pytest.raises(PrepareError, match="--init"):
        _prepare(tiny_model_dir, tmp_path / "x", init="zeros")


# ------------------------------------------------------------------ CLI

def test_cli_prepare_model(tiny_llama_dir, tmp_path, capsys):
    out = tmp_path / "cli"
    rc = cli_main(["prepare-model", "--model", str(tiny_llama_dir), "--out", str(out), "--quiet"])
    printed = capsys.readouterr().out
    tok = AutoTokenizer.from_pretrained(str(out))
    assert rc == 0 and str(out) in printed
    for s in TAG_STRINGS:
        assert f"{s} " in printed and str(tok.convert_tokens_to_ids(s)) in printed
    rc = cli_main(["prepare-model", "--model", str(out), "--out", str(tmp_path / "again"), "--quiet"])
    assert rc == 0 and "already prepared" in capsys.readouterr().out
    rc = cli_main(["prepare-model", "--model", str(tiny_llama_dir), "--out", str(out), "--init", "random",
                   "--quiet"])
    captured = capsys.readouterr()
    assert rc == 2 and "not empty" in captured.err
    with pytest.raises(SystemExit):
        cli_main(["prepare-model", "--model", str(tiny_llama_dir), "--out", str(out), "--dtype", "int8"])
