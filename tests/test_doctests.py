"""Run the doctested examples: the functional-token contract, prepare's pure helpers, the step credit, the reward rules, the replay order, hfcpu's request seeds, the paired statistics, the toy step checker."""

from __future__ import annotations

import doctest
import importlib

import pytest


@pytest.mark.parametrize("module_name", ["rftt_plugin.tokens", "rftt_plugin.prepare", "rftt_plugin.search.credit",
                                         "rftt_plugin.reward.score", "rftt_plugin.integration.replay_order",
                                         "rftt_plugin.cpu.hfcpu.sampling", "rftt_plugin.evaluation.stats",
                                         "rftt_plugin.demo.toy_prm", "rftt_plugin.commands._search_flags"])
def test_doctests(module_name):
    module = importlib.import_module(module_name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} doctest example(s) failed in {module_name}"
    assert result.attempted > 0, f"no doctest examples ran in {module_name}"
