"""Phase-1 SFT on verl: the `rftt_sft` recipe, the loss mask of our parquet, two real CPU steps."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import clean_env
from tests.phase1_fakes import ScriptedChat, make_question


def _compose(overrides):
    import verl  # noqa: F401  (loads our verl plugin, as `python -m verl.trainer.sft_trainer` does before Hydra)
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="verl.trainer.config", version_base=None):
        return compose(config_name="sft_trainer_engine", overrides=overrides)


def _make_parquet(out: Path, n_questions: int) -> Path:
    """A non-empty SFT parquet from our own pipeline (scripted instruct model)."""
    from rftt_plugin.phase1.job import GenSftJob, load_questions
    from rftt_plugin.phase1.prompted_search import PromptedConfig

    src = out.parent / f"{out.name}_questions.jsonl"
    src.write_text("".join(json.dumps({"problem": q, "answer": g}) + "\n"
                           for q, g in (make_question(i, i + 1, 3) for i in range(1, n_questions + 1))))
    job = GenSftJob(out, ScriptedChat(), search=PromptedConfig(iterations=6), progress=False)
    report = asyncio.run(job.run(load_questions(str(src))))
    assert report["rows"] == n_questions, report["summary"]
    return out / "train.parquet"


# --------------------------------------------------------------------------------------------
# Recipe
# --------------------------------------------------------------------------------------------

def test_rftt_sft_recipe_composes_with_the_paper_settings(tiny_model_dir):
    from verl.utils.config import omega_conf_to_dataclass

    cfg = _compose(["+recipe=rftt_sft", f"model.path={tiny_model_dir}"])
    assert cfg.optim.lr == 7e-6 and cfg.optim.lr_scheduler_type == "constant" and cfg.optim.lr_warmup_steps == 10
    assert cfg.optim.weight_decay == 0.1 and list(cfg.optim.betas) == [0.9, 0.95]
    assert cfg.trainer.total_epochs == 10 and cfg.data.train_batch_size == 32 and cfg.data.max_length == 8192
    assert cfg.data.messages_key == "messages" and cfg.data.truncation == "error"
    assert "hf_model" in cfg.checkpoint.save_contents and "hf_model" not in cfg.checkpoint.load_contents
    assert cfg.model.lora_rank == 0  # full fine-tuning; the guard resolves to its value with the plugin loaded
    assert cfg.rftt.recipe == "rftt_sft" and cfg.rftt.trainer == "sft"
    # every section the trainer turns into a dataclass accepts the recipe's values
    model = omega_conf_to_dataclass(cfg.model)
    optim = omega_conf_to_dataclass(cfg.optim)
    assert model.lora_rank == 0 and tuple(optim.betas) == (0.9, 0.95)
    omega_conf_to_dataclass(cfg.engine)
    omega_conf_to_dataclass(cfg.checkpoint)
    # command-line values win over the recipe, wherever they stand
    cfg = _compose(["optim.lr=1e-5", "+recipe=rftt_sft", f"model.path={tiny_model_dir}"])
    assert cfg.optim.lr == 1e-5


def test_rftt_sft_guard_stops_when_the_plugin_is_not_loaded(tiny_model_dir, monkeypatch):
    from omegaconf import OmegaConf
    from verl.utils.config import omega_conf_to_dataclass

    import rftt_plugin.integration.plugin as plugin

    cfg = _compose(["+recipe=rftt_sft", f"model.path={tiny_model_dir}"])
    monkeypatch.setattr(plugin, "LOADED", False)
    # the SFT trainer's first config read (SFTTrainer._build_config) fails with our explanation
    with pytest.raises(Exception, match="rftt-plugin's verl plugin is not loaded"):
        omega_conf_to_dataclass(cfg.model)
    with pytest.raises(Exception, match="not loaded"):
        OmegaConf.to_container(cfg, resolve=True)


# --------------------------------------------------------------------------------------------
# Loss mask: only the assistant's tagged response is trained on
# --------------------------------------------------------------------------------------------

def test_loss_mask_covers_exactly_the_assistant_response(tiny_model_dir, tmp_path):
    import pyarrow.parquet as pq
    from omegaconf import OmegaConf
    from transformers import AutoTokenizer
    from verl.utils.dataset.multiturn_sft_dataset import MultiTurnSFTDataset

    parquet = _make_parquet(tmp_path / "sft", 2)
    rows = pq.read_table(parquet).to_pylist()
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    config = OmegaConf.create({"max_length": 4096, "truncation": "error", "pad_mode": "right",
                               "messages_key": "messages"})
    dataset = MultiTurnSFTDataset(str(parquet), tok, config)
    assert len(dataset) == 2
    for i, row in enumerate(rows):
        question, response = (m["content"] for m in row["messages"])
        assert response.startswith("<") and "<output>" in response
        item = dataset[i]
        ids, mask, attn = item["input_ids"].tolist(), item["loss_mask"].tolist(), item["attention_mask"].tolist()
        n = sum(attn)
        trained = [t for t, m in zip(ids, mask) if m]
        # the trained tokens are one contiguous run at the end of the sequence ...
        first = mask.index(1)
        assert all(mask[first:n]) and not any(mask[:first]) and not any(mask[n:])
        # ... and they are exactly the assistant turn's content plus its end-of-turn marker
        assert tok.decode(trained) == response + "<|im_end|>\n"
        # everything before is the user turn and the assistant header, never trained
        assert tok.decode(ids[:first]) == f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"


# --------------------------------------------------------------------------------------------
# Two real optimizer steps of verl's SFT trainer on CPU
# --------------------------------------------------------------------------------------------

@pytest.mark.e2e
def test_verl_sft_trainer_runs_two_steps_on_our_parquet(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    from rftt_plugin.prepare import prepare_model
    from rftt_plugin.tokens import TAG_STRINGS

    model = tmp_path / "tiny_prepared"
    prepare_model(str(tiny_model_dir), str(model), progress=False)
    parquet = _make_parquet(tmp_path / "sft", 8)
    ckpt = tmp_path / "ckpt"
    overrides = [
        "+recipe=rftt_sft", f"model.path={model}", f"data.train_files={parquet}",
        # small and CPU-only (reference/cpu-setup.md 3d); everything else comes from the recipe
        "data.train_batch_size=4", "data.micro_batch_size_per_gpu=2", "data.max_length=1024",
        "data.num_workers=0", "data.use_dynamic_bsz=False",
        "trainer.device=cpu", "trainer.total_training_steps=2", "trainer.total_epochs=1",
        f"trainer.default_local_dir={ckpt}", "trainer.resume_mode=disable",
        "model.use_remove_padding=False", "model.enable_gradient_checkpointing=False",
        "+model.override_config.attn_implementation=sdpa",
        "engine.strategy=fsdp2", "engine.model_dtype=fp32", "engine.use_torch_compile=False",
    ]
    cmd = ["timeout", "170", sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
           "-m", "verl.trainer.sft_trainer", *overrides]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=190,
                          env=clean_env(OMP_NUM_THREADS="1"))
    wall = time.perf_counter() - t0
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    losses = [float(x) for x in re.findall(r"train/loss:([0-9.eE+-]+)", out)]
    assert len(losses) == 2 and all(0 < x < 20 for x in losses), out[-3000:]
    assert "'recipe': 'rftt_sft'" in out  # the recipe was composed, not silently skipped
    hf = ckpt / "global_step_2" / "huggingface"
    assert (hf / "config.json").exists() and any(hf.glob("*.safetensors"))
    tok = AutoTokenizer.from_pretrained(hf)  # the exported checkpoint still has the 16 tag tokens
    assert all(len(tok.encode(s, add_special_tokens=False)) == 1 for s in TAG_STRINGS)
    print(f"verl SFT trainer, 2 steps on CPU: {wall:.1f} s wall, losses {losses}")
    assert wall < 180
