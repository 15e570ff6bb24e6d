"""GPU check (run where a CUDA device exists; not part of the CPU test suite): how much bf16 on a GPU
moves the numbers the method depends on, measured against fp32 on the same GPU and on the CPU.

1. Tag read-out: P(tag | context) as a softmax over the eight opening-tag ids, at every position
   where the search chooses a tag (after a closing tag + newline, and at the response start).
   Reports the max |delta log p| and how often the most probable tag changes.
2. Sampled-token log-probs along whole responses (what rollout log-probs and the actor's
   log-probs are): max and mean |delta|.
3. The rftt_tree estimator on CUDA tensors against the CPU result (float32).

The model is the project's tiny Qwen2-style model, prepared with the functional tokens and warmed
up on synthetic tagged arithmetic, so the tag distributions are peaked as in a trained policy.

    python scripts/gpu_numerics_check.py --out gpu_numerics.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time


def _contexts(tok, vocab, problems, tagged_solution, chat_prompt_ids):
    """(prompt + response ids, positions where a tag is chosen) for each problem."""
    close_ids = {vocab.close_ids[t][0] for t in vocab.close_ids}
    out = []
    for p in problems:
        prompt = chat_prompt_ids(tok, p.question)
        response = tok(tagged_solution(p), add_special_tokens=False)["input_ids"]
        ids = prompt + response
        positions = [len(prompt)]  # the first tag
        for j in range(len(prompt), len(ids) - 1):
            if ids[j] in close_ids and j + 2 < len(ids):
                positions.append(j + 2)  # after "</tag>" and its newline
        out.append((ids, positions, len(prompt)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="gpu_numerics.json")
    parser.add_argument("--questions", type=int, default=64)
    parser.add_argument("--warmup-steps", type=int, default=300)
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rftt_plugin.search.advantage import rftt_tree_advantage
    from rftt_plugin.prepare import prepare_model
    from rftt_plugin.chat_prompt import chat_prompt_ids
    from rftt_plugin.demo.synthetic import make_problems, tagged_solution
    from rftt_plugin.tiny_model import build_tiny_model
    from rftt_plugin.tag_ids import TagIds
    from rftt_plugin.tokens import TAGS
    from rftt_plugin.demo.warmup import warmed_arithmetic_model

    assert torch.cuda.is_available(), "this check needs a CUDA device"
    t0 = time.time()
    work = tempfile.mkdtemp()
    base = build_tiny_model(f"{work}/base")
    prepare_model(str(base), f"{work}/prepared", overwrite=True, progress=False, log=lambda _m: None)
    warmed_arithmetic_model(f"{work}/prepared", f"{work}/warm", steps=args.warmup_steps, log=None)
    tok = AutoTokenizer.from_pretrained(f"{work}/warm")
    vocab = TagIds.from_tokenizer(tok)
    open_ids = [vocab.open_ids[t][0] for t in TAGS]
    problems = make_problems(args.questions, seed=123)
    contexts = _contexts(tok, vocab, problems, tagged_solution, chat_prompt_ids)

    def run(device: str, dtype) -> list[tuple[torch.Tensor, torch.Tensor]]:
        model = AutoModelForCausalLM.from_pretrained(f"{work}/warm", dtype=dtype).to(device).eval()
        rows = []
        with torch.inference_mode():
            for ids, positions, n_prompt in contexts:
                logits = model(torch.tensor([ids], device=device)).logits[0].float()
                logp = torch.log_softmax(logits, -1)
                tag = torch.log_softmax(logits[[p - 1 for p in positions]][:, open_ids], -1)   # read-out
                target = torch.tensor(ids[n_prompt:], device=device)
                tok_lp = logp[n_prompt - 1:len(ids) - 1].gather(1, target[:, None])[:, 0]      # sampled-token log-probs
                rows.append((tag.cpu(), tok_lp.cpu()))
        return rows

    ref_cpu = run("cpu", torch.float32)
    fp32_gpu = run("cuda", torch.float32)
    bf16_gpu = run("cuda", torch.bfloat16)

    def compare(a, b) -> dict:
        tag_d = torch.cat([(x[0] - y[0]).abs().flatten() for x, y in zip(a, b)])
        tok_d = torch.cat([(x[1] - y[1]).abs() for x, y in zip(a, b)])
        flips = sum(int((x[0].argmax(-1) != y[0].argmax(-1)).sum()) for x, y in zip(a, b))
        n = sum(x[0].shape[0] for x in a)
        return {"tag_readout_max_abs_dlogp": float(tag_d.max()), "tag_readout_mean_abs_dlogp": float(tag_d.mean()),
                "top_tag_changed": f"{flips}/{n}", "token_logprob_max_abs_d": float(tok_d.max()),
                "token_logprob_mean_abs_d": float(tok_d.mean()), "tokens": int(tok_d.numel())}

    g = torch.Generator().manual_seed(0)
    rewards = torch.randn(64, 256, generator=g) * 0.01
    mask = (torch.rand(64, 256, generator=g) > 0.1).float()
    index = [str(i // 8) for i in range(64)]
    adv_cpu, _ = rftt_tree_advantage(rewards, mask, normalize="tree", index=index)
    adv_gpu, _ = rftt_tree_advantage(rewards.cuda(), mask.cuda(), normalize="tree", index=index)
    report = {
        "device": torch.cuda.get_device_name(0), "torch": torch.__version__,
        "questions": len(contexts), "tag_positions": sum(len(c[1]) for c in contexts),
        "fp32_gpu_vs_fp32_cpu": compare(fp32_gpu, ref_cpu),
        "bf16_gpu_vs_fp32_gpu": compare(bf16_gpu, fp32_gpu),
        "rftt_tree_estimator_gpu_vs_cpu_max_abs": float((adv_gpu.cpu() - adv_cpu).abs().max()),
        "wall_s": round(time.time() - t0, 1),
    }
    print(json.dumps(report, indent=2))
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
