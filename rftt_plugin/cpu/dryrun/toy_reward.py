"""A reward for plumbing tests: the fraction of digits in the response.

A random tiny model never answers a math question, so a correctness reward is 0 everywhere and
GRPO's advantages (and gradients) are all zero. This one varies across samples, so a dry run
exercises non-zero advantages and a real update. Use it with
``reward.custom_reward_function.path=pkg://rftt_plugin.cpu.dryrun.toy_reward``. Not a metric of anything.
"""

from __future__ import annotations


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs) -> float:
    text = solution_str or ""
    return sum(ch.isdigit() for ch in text) / max(len(text), 1)
