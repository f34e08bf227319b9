"""The LLM seam: one protocol (``base``) and its backends (OpenAI-compatible HTTP, embedded llama.cpp, vLLM)."""
