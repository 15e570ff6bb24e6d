"""``hfcpu``: a verl rollout backend on Hugging Face transformers, for CPU dry runs and tests.

Select it with ``actor_rollout_ref.rollout.name=hfcpu`` (the ``+dryrun=cpu`` overlay does).
Pieces: :mod:`.replica` (``RolloutReplica``, registered as ``hfcpu``), :mod:`.server` (the Ray
actor), :mod:`.adapter` (``BaseRollout`` inside the trainer ranks, receives the weights),
:mod:`.engine` (batched generation), :mod:`.sampling`, :mod:`.prompt_logprobs`, :mod:`.weights`.

Contract of ``HFCPUServer.generate`` (what an agent loop gets through
``server_manager.generate(request_id, prompt_ids=..., sampling_params=...)``), identical to
verl 0.9.1's vLLM server (verl/workers/rollout/vllm_rollout/vllm_async_server.py:558-758)
unless stated:

Request
    ``prompt_ids``: token ids (list/array/tensor). Text only: ``image_data``/``video_data``/
    ``audio_data``/``mm_processor_kwargs`` must be empty, LoRA adapters are refused.

    ``sampling_params`` (a dict; never mutated):

    ==========================  =============================================================
    ``temperature``             ``< 1e-5`` = greedy (argmax); default 1.0
    ``top_p``, ``top_k``        nucleus / top-k; ``top_k <= 0`` disables; ignored when greedy
    ``max_tokens``              also ``max_new_tokens``; default
                                ``min(response_length, prompt_length + response_length - len(prompt))``,
                                then clamped to ``[1, max_model_len - len(prompt)]``
    ``stop``                    strings, matched on the decoded response (special tokens skipped);
                                refused unless ``rollout.skip_tokenizer_init=False`` (verl's default
                                ``True`` leaves SGLang/TRT-LLM without a detokenizer; verl 0.9.1's vLLM
                                server ignores the key; prefer ``stop_token_ids``, which all honour)
    ``stop_token_ids``          token ids
    ``ignore_eos``              default ``rollout.ignore_eos``
    ``allowed_token_ids``       sample only among these ids (the rest get -inf)
    ``logprobs``                truthy: ``log_probs`` of each sampled token; falsy: ``None``
                                (verl forces vLLM's ``logprobs`` to 0: never top-k alternatives)
    ``prompt_logprobs``         ``k`` in [0, 20]: see below
    ``rftt_top_logprobs``       plugin extension, ``k`` in [1, 20]: ``extra_fields["top_logprobs"] =
                                {"ids": [...], "logprobs": [...]}``, the top-k of the first generated
                                position's distribution as vLLM's processed log-probs (OOV mask,
                                ``allowed_token_ids``, penalties, temperature; no top-k/top-p), most
                                likely first (the cached tag read-out)
    ``logprob_token_ids``       vLLM's field, at most 128 ids, ``logprobs`` falsy: ``extra_fields[
                                "token_id_logprobs"] = {"ids": [...], "logprobs": [...]}``, each listed
                                id's processed log-prob at the first generated position, in the order
                                asked (as the plugin's subclass of verl's vLLM server returns them;
                                verl's stock server drops them); the one-request tag read-out
    ``repetition_penalty``      vLLM semantics (prompt + output tokens); default ``rollout.repetition_penalty`` or 1
    ``seed``                    per-request generator; default from ``rollout.seed`` when ``full_determinism``,
                                else derived from the request (``engine_kwargs.hfcpu.request_seeds``), else one
                                shared generator in arrival order
    ``n``                       must be 1 (verl's agent loops send ``rollout.n`` separate requests)
    ==========================  =============================================================

    Text-only vLLM keys (``include_stop_str_in_output``, ``skip_special_tokens``, ...) are ignored;
    other vLLM keys are accepted only at their neutral value; unknown keys raise.

Response: ``verl.workers.rollout.replica.TokenOutput``
    ``token_ids``: generated ids, *including* the token that ended generation (EOS, a stop token,
    or the token that completed a stop string; vLLM trims stop strings from text, not ids).

    ``log_probs``: per generated token, log-prob under the *processed* distribution
    (``logprobs_mode=processed_logprobs``, verl's default): greedy -> log_softmax of the logits
    after ``allowed_token_ids`` and repetition penalty; sampling -> after those, temperature,
    top-k and top-p (renormalised). ``None`` unless ``logprobs`` was truthy.

    ``stop_reason``: ``"completed"`` (verl maps vLLM's ``stop`` and ``length`` both to it).

    ``extra_fields``:
      * ``"global_steps"``: trainer step of the weights that produced this response (set by the
        last weight sync; verl derives ``min/max_global_steps`` and its staleness metrics from it);
      * ``"num_cached_tokens"``: always 0 (no prefix cache);
      * with ``prompt_logprobs=k`` only, two lists of ``len(prompt_ids)`` rows each::

            extra_fields["prompt_ids"][j]      # list[int],   width max(k, 1)
            extra_fields["prompt_logprobs"][j] # list[float], width max(k, 1)

        Row ``j < len(prompt) - 1`` is the model's distribution after prompt tokens ``0..j``
        (predicting prompt token ``j + 1``): for ``k = 0`` the actual token ``prompt[j + 1]`` and
        its log-prob; for ``k > 0`` the top-k ids and log-probs, most likely first (the actual
        token is not added when outside the top k). Row ``len(prompt) - 1`` is a dummy
        (``[0] * max(k, 1)`` / ``[0.0] * max(k, 1)``). To read P(next token | context), send
        ``context + [candidate]`` and read row ``len(context) - 1``. Prompt log-probs are raw
        ``log_softmax`` (no temperature, penalties or ``allowed_token_ids``).

Weights: ``load_weights`` after every trainer step (version counter + digest check); ``generate``
on weights the trainer has moved past raises ``StaleWeightsError`` (see :mod:`.weights`).
"""
