"""The reply pipeline: from a user message to a finished stream log.

``jobs`` (the registry: submit, cancel, drain) → ``upstream`` (the provider call, its deadlines and
the one retry, the guard applied to every piece) → ``batcher`` (pieces → delta events) →
``ending`` (pure: how the reply ends and which fallback it gets). It sits above the stream core
(``streaming``), the providers (``llm``) and the brand layer (``persona``), and below the edges
(``api``). See docs/architecture.md.
"""
