"""The LLM seam: one protocol (``base``) and its backends (OpenAI-compatible HTTP, embedded llama.cpp, vLLM), made
from settings and probed by ``factory``; ``hfmodel``: the embedded model as a Hugging Face folder for training and
evaluation, and what a trained folder holds."""
