"""What a failed check tells the regenerator: the failure named, with the evidence (the repair loop's critique).

``qagen/generate/refine.py`` rewrites only pairs that fail a deterministic check, and shows the regenerator why:
"the answer is not supported by the passage; the passage says: ...", "the answer is cut off at ...". A critique
with evidence is what a small model can act on; "needs revision" alone is not (benchmarks/RESULTS.md, "Knowledge: the critic loop, the repair loop and the judge").
"""

from __future__ import annotations

from rapidfuzz import fuzz, process

from qagen.corpus.spans import sentences

_ACTIONS = {
    "repetitive": "The answer repeats itself: say it once, briefly.",
    "too_short": "The answer is too short for this question: answer it fully from the passage.",
    "echo": "The answer only restates the question or the title: give the fact the passage states.",
    "template": "The question is not a real question about the passage (a placeholder or a generic slot): ask "
                "about a specific person, place, number or thing the passage names.",
    "not_a_sentence": "The relation does not read as a sentence: state it as one.",
    "leak": "The question contains its own answer {answer!r}: ask for it without naming it.",
    "not_standalone": "The question does not say what it is about, so nobody can answer it without the passage: "
                      "name the subject of {title!r} in it.",
    "not_a_question": "The question is not a question of 4 to 40 words: write one.",
}


def closest_sentence(text: str, chunk_text: str) -> str:
    """The chunk's sentence most like ``text`` (what the passage does say there)."""
    choices = [s.text for s in sentences(chunk_text) if not s.text.startswith("#")]
    if not choices:
        return chunk_text[:300]
    best = process.extractOne(text, choices, scorer=fuzz.token_set_ratio)
    return best[0][:300] if best else choices[0][:300]


def critique(check: str, reason: str, question: str, answer: str, chunk_text: str, title: str) -> str:
    """One failed check as a critique that shows its evidence."""
    if check == "ungrounded":
        return (f"The answer is not supported by the passage ({reason}). The passage says: "
                f"{closest_sentence(f'{question} {answer}', chunk_text)!r}")
    if check == "truncated":
        tail = " ".join(answer.split()[-8:])
        return f"The answer is cut off at {tail!r}: finish it, shorter."
    action = _ACTIONS.get(check, f"{check}: {reason}.")
    return action.format(answer=answer, title=title)
