"""``make eval``: multi-turn scenarios per brand, checked with the guard's own code.

Run ``python -m eval`` (or ``make eval``). It drives the real server core in-process (the same
prompt assembly, provider, streaming guard and stream log as the WebSocket and SSE transports)
against whatever provider is configured: the offline demo by default, OpenAI with
``OPENAI_API_KEY``. It prints one table per brand: each check, how many replies passed, failed, or
were not applicable. Deterministic checks only, unless ``--judge`` asks a real model to score the
replies against the brand's voice traits (needs ``OPENAI_API_KEY``).

With the offline provider (and the fake OpenAI server in the tests) this checks that the **rules**
hold — persona, memory, guard, fallbacks — not the quality of a real model's writing.

Then it measures the streaming guard itself on a labelled set of replies (``eval/labelled/``,
:mod:`eval.labelled`): precision, recall and false-positive rate per brand and per kind of good or
off-brand reply, next to the guard's cost per token (:mod:`eval.measure`). ``--set heldout`` measures it on the
held-out set instead (``eval/heldout/``, written blind to the guard's rules and to the first set).
"""
