"""After ingest: train (axolotl), notify (email), and ``qagen run`` over ingest, train, eval and notify."""
