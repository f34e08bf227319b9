"""Document-identity pairs, built by code (never by the model).

They teach which short doc ID, and which group, covers which topic, from the
document's one-line "about" answer (or its title when that call failed), so
the tuned model can say where it learned something. The wording comes from
the ``identity`` prompt file, which users may override like any other.
"""

from __future__ import annotations

from qagen.core import ids
from qagen.core.types import QAPair
from qagen.prompting.prompts import Prompt

MIN_ABOUT_WORDS = 4


def identity_pairs(
    prompt: Prompt, *, doc_id: str, chunk_id: str, title: str, about: str, group_id: str
) -> list[QAPair]:
    about = about.strip()
    if len(about.split()) < MIN_ABOUT_WORDS:  # missing, or too short to tell documents apart
        about = f'It is titled "{title}".'
    variables = {
        "short_id": ids.short(doc_id),
        "group_short": ids.short(group_id),
        "title": title,
        "about": about,
    }
    card = prompt.render(**variables)
    answers = {
        "which": card,
        "what": f'Document {variables["short_id"]} is "{title}". {about}',
        "group": f'Document {variables["short_id"]} ("{title}") is in group {variables["group_short"]}.',
    }
    pairs = []
    for name, _ in prompt.questions:
        if name not in answers:
            continue
        question = prompt.render_question(name, **variables)
        pairs.append(
            QAPair(
                pair_id=ids.hash_str("identity", doc_id, group_id, name, question, answers[name]),
                chunk_id=chunk_id,
                doc_id=doc_id,
                perspective=prompt.id,
                question=question,
                answer=answers[name],
                request_key="",
                model="code",
            )
        )
    return pairs
