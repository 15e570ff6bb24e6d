"""Trees the search builds on the fake and hf backends, for the before/after guard of issue #30.

:func:`fake_trees` and :func:`hf_trees` run fixed searches (fixed seeds, a few questions, both
token modes) and return ``{name: tree dict}`` with the run-dependent fields (wall times) removed.
``tests/test_trees_unchanged.py`` compares them with ``tests/fixtures/trees_before_30.json``,
recorded from commit 034bcc8 (before the tag-id / reward-rule refactor of issue #30).

Re-record (only when a change of the trees is intended, and say so in the commit)::

    PYTHONPATH=$PWD python -m tests.trees_regression tests/fixtures/trees_before_30.json
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

QUESTIONS = ("What is 3 + 4 ?", "Tom has 5 apples and eats 2. How many are left?", "Compute 12 * 3.")
FAKE_CONFIGS = {
    "faithful_added": {"token_mode": "added", "iterations": 8},
    "faithful_text": {"token_mode": "text", "iterations": 6},
    "distinct_added": {"token_mode": "added", "iterations": 6, "distinct_leaves": True, "min_tag_prior": 0.05},
}
HF_CONFIG = {"iterations": 4, "step_max_tokens": 5, "step_temperature": 0.5, "seed": 3}


def canonical(tree_dict: dict[str, Any]) -> dict[str, Any]:
    """The tree without what differs between runs of the same search (timings)."""
    d = json.loads(json.dumps(tree_dict))
    d["meta"].pop("wall_s", None)
    for it in d.get("iterations", []):
        it.pop("wall_s", None)
    return d


def _grade(text: str, gold: Any) -> float:
    # Independent of rftt_plugin.reward, so that a reward refactor cannot change the guard's grader.
    return 1.0 if gold is not None and f"\\boxed{{{gold}}}" in text else 0.0


async def _search_all(make_mcts, prompt_of, configs: dict[str, dict], questions=QUESTIONS) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, cfg in configs.items():
        mcts, closer = make_mcts(cfg)
        try:
            for i, q in enumerate(questions):
                res = await _search_one(mcts, q, prompt_of(q), gold="7")
                out[f"{name}/q{i}"] = canonical(res.tree.to_dict())
        finally:
            if closer is not None:
                await closer()
    return out


async def _search_one(mcts, question: str, prompt_ids: list[int], gold: Any):
    return await mcts.search(question, prompt_ids, grade=lambda t: _grade(t, gold), gold=gold)


def fake_trees() -> dict[str, Any]:
    from rftt_plugin.backends.fake import FakeBackend, TagScript
    from rftt_plugin.search import FunctionalMCTS, SearchConfig
    from rftt_plugin.tag_ids import TagIds

    script = TagScript()

    def make(cfg):
        tag_ids = TagIds.from_fake(script.vocab, cfg["token_mode"])
        return FunctionalMCTS(FakeBackend.for_script(script), tag_ids, SearchConfig(**cfg)), None

    return asyncio.run(_search_all(make, script.vocab.prompt_ids, FAKE_CONFIGS))


def hf_trees(base_dir: str, prepared_dir: str) -> dict[str, Any]:
    """``base_dir``: the tiny random model (text mode); ``prepared_dir``: it after prepare-model
    (added mode); both from :func:`build_models`."""
    from transformers import AutoTokenizer

    from rftt_plugin.backends.hf import HFBackend
    from rftt_plugin.chat_prompt import chat_prompt_ids
    from rftt_plugin.search import FunctionalMCTS, SearchConfig
    from rftt_plugin.tag_ids import TagIds

    out: dict[str, Any] = {}
    for mode, folder in (("added", prepared_dir), ("text", base_dir)):
        tok = AutoTokenizer.from_pretrained(folder)

        def make(cfg, _folder=folder, _tok=tok, _mode=mode):
            backend = HFBackend.from_pretrained(str(_folder), device="cpu", dtype="float32", max_batch_size=4)
            mcts = FunctionalMCTS(backend, TagIds.from_tokenizer(_tok, mode=_mode),
                                  SearchConfig(token_mode=_mode, **cfg))
            return mcts, backend.aclose

        out.update(asyncio.run(_search_all(make, lambda q, _tok=tok: chat_prompt_ids(_tok, q),
                                           {f"hf_{mode}": HF_CONFIG}, QUESTIONS[:2])))
    return out


def build_models(root: str) -> tuple[str, str]:
    """(base, prepared) model folders under ``root``, built in this order every time: prepare-model
    draws from torch's global generator (``build_tiny_model`` seeds it), so a prepared model built
    after other work (a session fixture) can differ from the recorded one."""
    from rftt_plugin.tiny_model import build_tiny_model
    from rftt_plugin.prepare import prepare_model

    base = build_tiny_model(f"{root}/tiny_qwen2")
    prepared = f"{root}/tiny_prepared"
    prepare_model(str(base), prepared, overwrite=True, progress=False, log=lambda _m: None)
    return str(base), prepared


def record(path: str) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as root:
        base, prepared = build_models(root)
        trees = {"fake": fake_trees(), "hf": hf_trees(base, prepared)}
    header = ("Search trees recorded from commit 034bcc8 (before the issue #30 refactor) by "
              "tests/trees_regression.py; re-record with: PYTHONPATH=$PWD python -m tests.trees_regression "
              "tests/fixtures/trees_before_30.json (only when a change of the trees is intended)")
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"_header": header, **trees}, f, indent=0, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    record(sys.argv[1])
