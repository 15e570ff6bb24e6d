"""Build a tiny random causal LM and a byte-level BPE tokenizer offline, in seconds.

Used by the test-suite, the CPU dry run (``cpu/dryrun``) and the CPU quickstart (``demo/``):
nothing is downloaded. A top-level module that imports nothing of the package, so ``cpu/`` and
``demo/`` both use it without importing each other. The
tokenizer is trained on a small math corpus so that ordinary text encodes into a few pieces,
carries a ChatML-style chat template and ``<|im_end|>`` as end of turn, like Qwen2.5.

>>> # doctest: +SKIP
>>> path = build_tiny_model("/tmp/tiny")            # Qwen2-style, tied embeddings
>>> path = build_tiny_model("/tmp/tiny_l", arch="llama")  # Llama-style (Metaspace pre-tokeniser)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CORPUS = [
    "What is 2 + 3? The answer is 5.",
    "Solve for x: 2x + 4 = 10. So x = 3.",
    "Let me think step by step about this math problem.",
    "The final answer is \\boxed{42}.",
    "First, compute 12 * 7 = 84. Then add 16 to get 100.",
    "We need to find the number of apples left after she eats three of them.",
    "Check the previous step: the sum 17 + 25 is 42, not 43. Refine the result.",
    "Let's restate the question clearly: given a and b, find a + b.",
    "Subtract 9 from 30 to get 21, and divide by 3 to get 7.",
    "Therefore the total cost is $18$ dollars, so the answer is \\boxed{18}.",
    "\\frac{1}{2} + \\frac{1}{3} = \\frac{5}{6} and \\sqrt{16} = 4.",
]


@dataclass(frozen=True)
class TinyModelSpec:
    arch: str = "qwen2"          # "qwen2" (ByteLevel BPE, tied) or "llama" (Metaspace BPE, untied)
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    vocab_size: int = 512        # BPE vocabulary trained (before any added tokens)
    padded_vocab: int = 0        # >0: pad the embedding matrix beyond the tokenizer (Qwen2.5 style)
    max_positions: int = 2048
    seed: int = 0
    split_digits: bool = False   # True: every digit is its own token (arithmetic facts are learnt per digit)


def build_tokenizer(arch: str = "qwen2", vocab_size: int = 512, split_digits: bool = False):
    """Train a BPE tokenizer on a fixed corpus and wrap it as a ``PreTrainedTokenizerFast``.

    ``split_digits`` puts a digit pre-tokeniser first, so numbers are always spelled digit by
    digit (" 12" is never one piece): a tiny model then learns arithmetic facts per digit, which
    the CPU quickstart needs; the default keeps the merged pieces other tests rely on.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    corpus = _CORPUS * 40
    if arch == "llama":
        # SentencePiece-like: Metaspace pre-tokeniser with byte fallback through the alphabet.
        tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=False))
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")
        if split_digits:
            tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), tok.pre_tokenizer])
        tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="first")
        alphabet = sorted(set("".join(_CORPUS)) | set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789<>/_\\{}()[]=+-*^$.,:;!?'\"\n\u2581 "))
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", *specials],
                                      initial_alphabet=alphabet)
    else:
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        if split_digits:
            tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                         pre_tokenizers.ByteLevel(add_prefix_space=False)])
        tok.decoder = decoders.ByteLevel()
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer=trainer)
    kwargs = dict(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                  additional_special_tokens=["<|im_start|>"])
    if arch == "llama":
        kwargs["unk_token"] = "<unk>"
    hf_tok = PreTrainedTokenizerFast(**kwargs)
    hf_tok.chat_template = CHATML_TEMPLATE
    return hf_tok


def build_tiny_model(out_dir: str | os.PathLike, spec: TinyModelSpec | None = None, **overrides) -> Path:
    """Write a random tiny causal LM + tokenizer to ``out_dir`` and return the path.

    ``overrides`` are fields of :class:`TinyModelSpec` (e.g. ``arch="llama"``).
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    spec = spec or TinyModelSpec()
    if overrides:
        spec = TinyModelSpec(**{**spec.__dict__, **overrides})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(spec.seed)
    tok = build_tokenizer(spec.arch, spec.vocab_size, spec.split_digits)
    vocab = max(len(tok), spec.padded_vocab)
    common = dict(vocab_size=vocab, hidden_size=spec.hidden_size, intermediate_size=2 * spec.hidden_size,
                  num_hidden_layers=spec.num_layers, num_attention_heads=spec.num_heads,
                  num_key_value_heads=spec.num_kv_heads, max_position_embeddings=spec.max_positions,
                  eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None)
    if spec.arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(tie_word_embeddings=False, **common))
    else:
        model = Qwen2ForCausalLM(Qwen2Config(tie_word_embeddings=True, **common))
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    tok.save_pretrained(out)
    model.save_pretrained(out)
    return out
