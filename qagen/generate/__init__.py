"""Stage 2: the perspective suite, refinement (critic -> regenerator), the judge, identity pairs."""
