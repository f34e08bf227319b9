"""After ingest: train (axolotl), evaluate (closed book), notify (email), and ``qagen run`` over them all."""
