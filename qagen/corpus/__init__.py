"""Stage 1: read a folder of documents and chunk them; and the question files asked of them (``questions``:
held-out questions for ``qagen eval``, benchmark questions for decontamination)."""
