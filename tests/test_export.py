"""`rftt export` and rftt_plugin.export: the bridge from a verl checkpoint to the next stage."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rftt_plugin.export import CheckpointNotFound, locate, merger_command
from tests.helpers import REPO, clean_env


def _hf(d: Path, weights: str = "model.safetensors") -> Path:
    d.mkdir(parents=True)
    (d / "config.json").write_text("{}")
    (d / weights).write_bytes(b"w")
    return d


def test_newest_step_with_a_copy_is_chosen(tmp_path):
    _hf(tmp_path / "global_step_9" / "huggingface")
    newest = _hf(tmp_path / "global_step_10" / "huggingface")   # 10 > 9: numeric, not lexical order
    (tmp_path / "latest_checkpointed_iteration.txt").write_text("10")
    found = locate(tmp_path)
    assert (found.step, found.kind, found.hf_dir) == (10, "hf", newest)


def test_actor_copy_of_main_ppo_and_an_explicit_step(tmp_path):
    first = _hf(tmp_path / "global_step_5" / "actor" / "huggingface", "pytorch_model.bin")
    _hf(tmp_path / "global_step_7" / "actor" / "huggingface")
    assert locate(tmp_path, step=5).hf_dir == first
    assert locate(tmp_path / "global_step_5").hf_dir == first   # a step directory itself


def test_shards_without_a_copy_go_to_verls_merger(tmp_path):
    actor = tmp_path / "global_step_3" / "actor"
    actor.mkdir(parents=True)
    (actor / "model_world_size_2_rank_0.pt").write_bytes(b"")
    (actor / "huggingface").mkdir()                 # verl writes config + tokenizer here even without hf_model
    (actor / "huggingface" / "config.json").write_text("{}")
    found = locate(tmp_path)
    assert (found.kind, found.shard_dir) == ("fsdp", actor)
    assert merger_command("py", actor, tmp_path / "out") == [
        "py", "-m", "verl.model_merger", "merge", "--backend", "fsdp",
        "--local_dir", str(actor), "--target_dir", str(tmp_path / "out")]


@pytest.mark.parametrize("setup, words", [
    (lambda d: None, "no global_step_<N>"),
    (lambda d: (d / "global_step_1" / "actor").mkdir(parents=True), "neither a Hugging Face copy"),
])
def test_unusable_directories_say_what_was_looked_for(tmp_path, setup, words):
    setup(tmp_path)
    with pytest.raises(CheckpointNotFound, match=words):
        locate(tmp_path)
    with pytest.raises(CheckpointNotFound, match="no such directory"):
        locate(tmp_path / "missing")
    _hf(tmp_path / "global_step_2" / "huggingface")
    with pytest.raises(CheckpointNotFound, match=r"no global_step_4 \(have \[.*2\]\)"):
        locate(tmp_path, step=4)


def _rftt(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).with_name("rftt")), "export", *args], capture_output=True,
                          text=True, env=clean_env(), cwd=REPO, timeout=120)


def test_export_command_copies_skips_a_done_export_and_refuses_to_clobber(tmp_path):
    src = _hf(tmp_path / "ckpt" / "global_step_4" / "actor" / "huggingface")
    (src / "tokenizer.json").write_text("{}")
    out = tmp_path / "hf"
    proc = _rftt("--checkpoint-dir", str(tmp_path / "ckpt"), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "rftt_export.json",
                                                      "tokenizer.json"]
    assert json.loads((out / "rftt_export.json").read_text())["step"] == 4
    assert not (tmp_path / "hf.partial").exists()
    again = _rftt("--checkpoint-dir", str(tmp_path / "ckpt"), "--out", str(out))
    assert again.returncode == 0 and "nothing to do" in again.stdout
    _hf(tmp_path / "ckpt" / "global_step_8" / "actor" / "huggingface")      # a newer step: not silently replaced
    refused = _rftt("--checkpoint-dir", str(tmp_path / "ckpt"), "--out", str(out))
    assert refused.returncode == 2 and "--overwrite" in refused.stderr
    assert _rftt("--checkpoint-dir", str(tmp_path / "ckpt"), "--out", str(out), "--overwrite").returncode == 0
    assert json.loads((out / "rftt_export.json").read_text())["step"] == 8
    missing = _rftt("--checkpoint-dir", str(tmp_path / "nope"), "--out", str(tmp_path / "x"))
    assert missing.returncode == 2 and "nope: no such directory" in missing.stderr
