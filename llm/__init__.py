"""Model providers: OpenAI (and compatible servers) through the official SDK, and the offline demo."""
