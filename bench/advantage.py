"""rftt_tree estimator vs verl's reinforce_plus_plus on the same batch, same run.

    python bench/advantage.py [--rows 1024] [--length 2048] [--repeats 5]

Target: rftt_tree (either normalisation) takes at most 2x the time of reinforce_plus_plus.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def _time(fn, repeats):
    fn()  # warm-up
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1024)
    parser.add_argument("--length", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--gamma", type=float, default=1.0)
    args = parser.parse_args()

    import verl  # noqa: F401  (registers rftt_tree)
    from omegaconf import OmegaConf
    from verl.trainer.ppo import core_algos

    torch.manual_seed(0)
    lengths = torch.randint(args.length // 8, args.length + 1, (args.rows,))
    mask = (torch.arange(args.length)[None, :] < lengths[:, None]).float()
    rewards = torch.zeros(args.rows, args.length)
    rewards[torch.arange(args.rows), lengths - 1] = (torch.rand(args.rows) > 0.5).float()
    step_ends = torch.rand(args.rows, args.length) < 0.01
    dense = rewards + 0.1 * step_ends.float() * mask
    index = [f"uid{i // 16}" for i in range(args.rows)]

    rpp = core_algos.get_adv_estimator_fn("reinforce_plus_plus")
    ours = core_algos.get_adv_estimator_fn("rftt_tree")
    base = _time(lambda: rpp(token_level_rewards=rewards, response_mask=mask,
                             config=OmegaConf.create({"gamma": args.gamma})), args.repeats)
    print(f"batch {args.rows} x {args.length}, gamma {args.gamma}, median of {args.repeats}")
    print(f"{'estimator':<34}{'seconds':>10}{'ratio':>9}")
    print(f"{'reinforce_plus_plus (baseline)':<34}{base:>10.4f}{1.0:>9.2f}")
    worst = 0.0
    for normalize in ("global", "tree"):
        cfg = OmegaConf.create({"gamma": args.gamma, "rftt_normalize": normalize})
        sec = _time(lambda: ours(token_level_rewards=dense, response_mask=mask, config=cfg, index=index), args.repeats)
        worst = max(worst, sec / base)
        print(f"{'rftt_tree normalize=' + normalize:<34}{sec:>10.4f}{sec / base:>9.2f}")
    print(f"target <= 2.00x: {'met' if worst <= 2.0 else 'MISSED'} (worst {worst:.2f}x)")


if __name__ == "__main__":
    main()
