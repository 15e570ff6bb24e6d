"""Phase 1: self-correcting SFT data from prompt-driven functional MCTS (``rftt gen-sft``).

``chat`` (the instruct-model interface), ``prompt_templates`` (the per-tag prompts and reply
cleaning), ``prompted_search`` (the prompted MCTS that grows a tree per question), ``stitch`` (one
tree -> one SFT sample: best correct path, or a wrong tail merged via ``<verify>``/``<refine>``)
and ``job`` (the resumable gen-sft run over a question file).
"""
