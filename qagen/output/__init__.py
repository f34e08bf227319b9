"""Stage 4: what a run writes: the axolotl JSONL, DPO pairs, the HTML report and the dataset card."""
