"""Functional tree search (no verl imports here): tree model, MCTS, concurrent driver."""

from rftt_plugin.search.config import SearchConfig
from rftt_plugin.search.many import SearchRequest, search_many
from rftt_plugin.search.mcts import FunctionalMCTS, SearchResult
from rftt_plugin.search.tree import TERMINAL_REASONS, Iteration, Leaf, Node, Tree, TreeStats

__all__ = [
    "FunctionalMCTS", "Iteration", "Leaf", "Node", "SearchConfig", "SearchRequest", "SearchResult",
    "TERMINAL_REASONS", "Tree", "TreeStats", "search_many",
]
