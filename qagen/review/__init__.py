"""``qagen review``: look at a run's pairs in a local page, accept, reject or edit them, and measure the checks
against the human.

- :mod:`qagen.review.items`: the page's data (every pair by document, its chunk and the span to highlight) and
  the decisions it sends back (stored by :mod:`qagen.store.reviews`, applied by export);
- :mod:`qagen.review.server`: the local HTTP server (127.0.0.1 only, a random token) and its one page;
- :mod:`qagen.review.stats`: precision and recall of each check against the human, and ``--calibrate``;
- :mod:`qagen.review.replay`: the rated pairs as a regression set for a prompt or filter change.
"""
