"""``qagen eval``: does the tuned model know the documents? Base vs tuned, closed book and open book.

``evaluate`` (the command: the knowledge score on held-out questions, the eval.jsonl format check, the judge),
``knowledge`` (questions tied to their documents, scored per document and kind), ``openbook`` (the questions asked
over input blocks), ``scoring`` (SQuAD EM / F1 / contains, paired bootstrap intervals) and ``answer`` (greedy
answers from a local model, a LoRA adapter on it, or a fully fine-tuned one). The question files are read by
``qagen.corpus.questions`` (decontamination reads them too, from below this layer).
"""
