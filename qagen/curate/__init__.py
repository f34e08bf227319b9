"""Stage 3: curation: verdicts from the judge, grounding, dedup and decontamination."""
