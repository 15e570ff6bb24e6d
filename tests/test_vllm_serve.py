"""``rftt search --backend openai`` against a real ``vllm serve`` (vLLM's CPU build), started by
the test on 127.0.0.1 and stopped afterwards.

* the trees are valid and token-exact: each step is its opening-tag id and newline (inserted by the
  search) followed by the ids vLLM sampled, one log-prob per id, ending on that tag's closing id or the step budget;
* under greedy decoding the first-step tags (the root's children, in rank order) equal those of
  the hf backend on the same checkpoint (an independent implementation: transformers);
* the tag read-out (issue 28): ``logprob_method=auto`` takes vLLM's ``logprob_token_ids`` (one
  request on the context) on this vLLM, and its values equal a transformers forward pass and the
  ``prompt_logprobs`` read-out;
* the padded-row guard: the checkpoint has embedding rows beyond the tokenizer that carry real
  probability mass (measured below with transformers), yet sampling through the openai backend
  never returns one of those ids (without the guard vLLM samples them and its detokenizer crashes).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from tests.helpers import clean_env
from tests.vllm_lane import VLLM_CPU_ENV, build_vllm_tiny, require_vllm_lane

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(600)]

START_TIMEOUT_S = 240
QUESTIONS = [{"question": "What is 12 plus 30?", "answer": "42"}, {"question": "Subtract 9 from 30.", "answer": "21"}]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    require_vllm_lane()
    root = tmp_path_factory.mktemp("vllm_serve")
    model = build_vllm_tiny(root)
    port = _free_port()
    log_path = root / "vllm_serve.log"
    cmd = [os.path.join(os.path.dirname(sys.executable), "vllm"), "serve", str(model), "--host", "127.0.0.1",
           "--port", str(port), "--dtype", "float32", "--max-model-len", "512", "--enforce-eager", "--seed", "0",
           "--served-model-name", "tiny", "--max-num-seqs", "16"]
    t0 = time.time()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, env=clean_env(**{k: v for k, v in VLLM_CPU_ENV.items()}), stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        import httpx

        while True:
            if proc.poll() is not None:
                pytest.fail(f"vllm serve exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            text = log_path.read_text()
            if "Traceback (most recent call last)" in text:
                pytest.fail(f"vllm serve printed a traceback:\n{text[-3000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() - t0 > START_TIMEOUT_S:
                pytest.fail(f"vllm serve not up after {START_TIMEOUT_S} s:\n{text[-3000:]}")
            time.sleep(1.0)
        print(f"\n[vllm serve] up in {time.time() - t0:.1f} s on port {port}")
        yield {"model": model, "base_url": f"http://127.0.0.1:{port}/v1", "root": root, "log": log_path}
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        assert proc.poll() is not None


def _search(model, backend: str, out, questions_file, extra=()):
    cmd = [sys.executable, "-m", "rftt_plugin.cli", "search", "--model", str(model), "--backend", backend,
           "--questions", str(questions_file), "--out", str(out), "--iterations", "3", "--temperature", "0",
           "--step-max-tokens", "12", "--max-depth", "3", "--seed", "0", "--no-grade", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=clean_env(), timeout=300)
    assert proc.returncode == 0, f"rftt search --backend {backend} failed:\n{proc.stderr[-3000:]}"
    from rftt_plugin.search.tree import Tree

    return [Tree.load(out / "trees" / name) for name in sorted(os.listdir(out / "trees"))]


def _check_tree(tree, tags) -> None:
    opening = {ids[0]: t for t, ids in tags.open_ids.items()}
    for node in tree.walk():
        if node.tag is None or not node.token_ids:
            continue
        ids = node.token_ids
        assert len(node.logprobs) == len(node.sampled) == len(ids)
        inserted = 1 + len(tags.newline_ids)  # the search inserts "<tag>\n", the model writes the rest
        assert opening.get(ids[0]) == node.tag, (node.id, ids[:3])
        assert ids[1:inserted] == list(tags.newline_ids) and not any(node.sampled[:inserted]), (node.id, ids[:3])
        assert all(node.sampled[inserted:]), f"node {node.id}: an id after '<tag>\\n' was not sampled"
        close = tags.close_ids[node.tag][0]
        if node.close_index is not None:
            assert ids[node.close_index] == close and node.close_index == len(ids) - 1, (node.id, ids)
        else:  # no closing tag: the step ran into its budget (or the model stopped it)
            assert close not in ids
    for leaf in tree.paths():
        assert leaf.response_ids == tree.response_ids(leaf.leaf_id)  # the leaf is the nodes' ids, nothing re-tokenised


def test_search_through_vllm_serve_matches_hf_and_trees_are_exact(served):
    from transformers import AutoTokenizer

    from rftt_plugin.tag_ids import TagIds

    qfile = served["root"] / "questions.jsonl"
    qfile.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    via_vllm = _search(served["model"], "openai", served["root"] / "out-openai", qfile,
                       ("--base-url", served["base_url"], "--served-model-name", "tiny"))
    via_hf = _search(served["model"], "hf", served["root"] / "out-hf", qfile)
    tags = TagIds.from_tokenizer(AutoTokenizer.from_pretrained(served["model"]), mode="added")
    assert len(via_vllm) == len(via_hf) == len(QUESTIONS)
    for tv, th in zip(via_vllm, via_hf):
        _check_tree(tv, tags)
        first_v = [c.tag for c in sorted(tv.children(tv.root), key=lambda n: n.rank)]
        first_h = [c.tag for c in sorted(th.children(th.root), key=lambda n: n.rank)]
        assert first_v and first_v == first_h, (first_v, first_h)
        same_text = [c.token_ids for c in tv.children(tv.root)] == [c.token_ids for c in th.children(th.root)]
        print(f"\n[vllm serve] first-step tags {[t.value for t in first_v]}; first-step ids equal to hf: {same_text}")


def test_padded_rows_are_never_sampled_through_the_openai_backend(served):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rftt_plugin.backends.base import SamplingParams
    from rftt_plugin.backends.openai import OpenAIBackend, out_of_vocab_ids
    from rftt_plugin.chat_prompt import chat_prompt_ids

    tok = AutoTokenizer.from_pretrained(served["model"])
    banned = out_of_vocab_ids(tok, served["model"])
    assert banned, "the fixture must have padded rows"
    context = chat_prompt_ids(tok, QUESTIONS[0]["question"])
    hf = AutoModelForCausalLM.from_pretrained(served["model"], dtype=torch.float32).eval()
    with torch.no_grad():
        probs = torch.softmax(hf(input_ids=torch.tensor([context])).logits[0, -1], dim=-1)
    padded_mass = float(probs[banned].sum())
    # Precondition: without the guard, 8 x 24 sampled tokens would hit a padded id with
    # probability > 1 - (1 - mass)^192 (mass measured at the first position only).
    assert padded_mass > 0.01, f"padded rows carry only {padded_mass:.4f} of the mass: the test would prove nothing"

    async def sample_all():
        backend = OpenAIBackend(served["base_url"], "tiny", banned_ids=banned)
        try:
            return await asyncio.gather(*(backend.generate(context, SamplingParams(max_tokens=24, temperature=1.0,
                                                                                    seed=s)) for s in range(8)))
        finally:
            await backend.aclose()

    gens = asyncio.run(sample_all())
    assert all(g.finish_reason != "error" for g in gens), [g.stop_reason for g in gens]
    sampled = [t for g in gens for t in g.token_ids]
    print(f"\n[vllm serve] padded rows hold {padded_mass:.3f} of the first-token mass; {len(sampled)} tokens sampled, "
          f"max id {max(sampled)} < len(tokenizer) {len(tok)}")
    assert max(sampled) < len(tok)


def test_openai_auto_readout_takes_logprob_token_ids_on_vllm_serve(served):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rftt_plugin.backends.openai import OpenAIBackend
    from rftt_plugin.chat_prompt import chat_prompt_ids
    from rftt_plugin.tag_ids import TagIds

    tok = AutoTokenizer.from_pretrained(served["model"])
    opening = [ids[0] for ids in TagIds.from_tokenizer(tok, mode="added").open_ids.values()]
    context = chat_prompt_ids(tok, QUESTIONS[1]["question"])
    hf = AutoModelForCausalLM.from_pretrained(served["model"], dtype=torch.float32).eval()
    with torch.no_grad():  # plain vllm serve has no OOV mask: the full rows, padded ones included
        ref = torch.log_softmax(hf(input_ids=torch.tensor([context])).logits[0, -1].double(), dim=-1)

    async def both():
        auto = OpenAIBackend(served["base_url"], "tiny")
        old = OpenAIBackend(served["base_url"], "tiny", logprob_method="prompt_logprobs")
        try:
            return (await auto.next_token_logprobs(context, opening), auto.readout_path, auto.requests,
                    await old.next_token_logprobs(context, opening))
        finally:
            await auto.aclose()
            await old.aclose()

    got, path, requests, old = asyncio.run(both())
    assert path == "token_ids" and requests == 1
    diff = max(abs(g - float(ref[c])) for g, c in zip(got, opening))
    print(f"\n[vllm serve] logprob_token_ids read-out vs transformers: max |diff| {diff:.2e}")
    assert diff < 1e-4 and max(abs(g - o) for g, o in zip(got, old)) < 1e-4
