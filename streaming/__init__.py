"""The streaming core: stream log rules, buffer backends, fan-out, generation jobs."""
