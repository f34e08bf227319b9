"""Answer-first questions on the fact ledger: the stage that asks them, the checks code makes, and cloze rows.

The ledger (``qagen/generate/ledger.py``) says which facts a chunk holds; this stage asks the teacher for questions
whose answer is each fact's span, one sentence at a time, its facts marked in place (``prompts/fact_questions.md``):
a small teacher stays on the sentence in front of it, and a request pays for that sentence only, not the chunk.
Each question is then checked by code (``question_checks.check_question``): it reads as a question, does not contain
its answer, and names its subject well enough to stand alone closed-book. A small teacher also shifts answers (a
question written for the next amount of the sentence), so ``question_checks.align`` gives each question to the fact
of its sentence whose surrounding words it shares most, and a question that shares none is ``off_target``. Questions
that pass are kept until their fact has k (``surplus`` after that); a near-duplicate of one already kept in the
chunk is a ``duplicate``. Facts below k are asked again (a top-up shows them the questions already tried).
Cloze rows (``prompts/cloze.md``) are built by code from each fact's sentence: no teacher tokens.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace

from qagen.core import ids
from qagen.core.types import Chunk, Document, Fact, QAPair
from qagen.corpus.spans import Sentence, sentences
from qagen.generate.caller import Caller
from qagen.generate.ledger import allocate, code_facts, model_facts, select
from qagen.generate.question_checks import (
    align,
    check_question,
    cloze_sentence,
    leaks,
    near_duplicate,
    wh_word,
)
from qagen.generate.refine import Refiner
from qagen.generate.templates import definition
from qagen.prompting.prompts import Prompt, PromptSet
from qagen.prompting.requests import build_request

QUESTION_OUTPUT = "fact_questions"
CLOZE_OUTPUT = "cloze"
REPAIRABLE = ("leak", "not_standalone", "not_a_question")  # what a rewritten question can fix (--refine)
_QUESTION_WORD = re.compile(r"^(who|whom|whose|what|which|when|where|why|how|in what|on what|at what)\b",
                            re.IGNORECASE)


# --- the stage ------------------------------------------------------------------
@dataclass
class _Asked:
    fact: Fact
    number: int  # its marker in the sentence: [number: span]
    need: int
    asked: tuple[str, ...]


@dataclass
class _Group:
    """One request: a sentence with the facts it asks about marked in place."""

    sentence: Sentence
    before: str  # the sentence before it, for its pronouns
    items: list[_Asked]

    def marked(self) -> str:
        text, out, pos = self.sentence.text, [], 0
        for a in sorted(self.items, key=lambda a: a.fact.start):
            at = a.fact.start - self.sentence.start
            if at < pos or text[at:at + len(a.fact.span)] != a.fact.span:
                continue  # overlapping or moved: left unmarked (its number is still listed)
            out.append(f"{text[pos:at]}[{a.number}: {a.fact.span}]")
            pos = at + len(a.fact.span)
        return "".join(out) + text[pos:]


class LedgerStage:
    """Builds one chunk's ledger and asks its answer-first questions (and cloze rows) through the cache."""

    def __init__(self, caller: Caller, prompts: PromptSet, *, k: int = 3, top_ups: int = 1, seed: int = 0,
                 refiner: Refiner | None = None):
        self.caller, self.prompts, self.k, self.top_ups, self.seed = caller, prompts, k, top_ups, seed
        self.refiner = refiner  # --refine: a question that fails a check is repaired (qagen/generate/refine.py)
        enabled = [p for p in prompts.all if p.enabled]
        self.questions = next((p for p in enabled if p.output == QUESTION_OUTPUT), None)
        self.extractor = next((p for p in enabled if p.role == "extractor" and p.output == "spans"), None)
        self.cloze = next((p for p in enabled if p.output == CLOZE_OUTPUT), None)

    @property
    def active(self) -> bool:
        return self.questions is not None or self.cloze is not None

    async def facts(self, doc: Document, chunk: Chunk, sents: list[Sentence]) -> list[Fact]:
        """The chunk's ledger: code's spans and the extraction request's verified phrases, selected and stored."""
        found = code_facts(doc, chunk, sents)
        if self.extractor is not None:
            c = self.caller
            c.stats.calls[self.extractor.id] += 1
            c.progress.requests_added(1)
            request = build_request(self.prompts, self.extractor, doc, chunk, c.model_for(self.extractor.role),
                                    seed=self.seed or None)
            result = await c.ask_structured(self.extractor, request, chunk)
            if result is not None:
                phrases = [str(x) for x in result[0].model_dump()["phrases"]]
                verified, rejected = model_facts(phrases, doc, chunk, sents)
                c.stats.ledger["model_spans"] += len(verified)
                c.stats.ledger["model_spans_rejected"] += rejected
                found += verified
        limit = self.questions.max_facts if self.questions is not None else 10_000
        chosen = select(found, limit)
        self.caller.stats.ledger["facts"] += len(chosen)
        self.caller.store.add_facts(self.caller.run_id, [
            (f, f"{doc.path}\x00{chunk.index:06d}\x00{f.start:08d}\x00{f.fact_id}") for f in chosen])
        return chosen

    async def run(self, doc: Document, chunk: Chunk) -> list[tuple[Prompt, list[QAPair]]]:
        """The ledger, then its questions (rounds of requests until every fact has k or the top-ups run out), then
        the cloze rows. Returns (prompt, pairs) rows for the generator to store."""
        sents = sentences(chunk.text)
        facts = await self.facts(doc, chunk, sents)
        rows: list[tuple[Prompt, list[QAPair]]] = []
        if self.questions is not None and facts:
            rows.append((self.questions, await self._questions(doc, chunk, facts, sents)))
        if self.cloze is not None and facts:
            rows.append((self.cloze, self._cloze(doc, chunk, facts)))
        return rows

    async def _questions(self, doc: Document, chunk: Chunk, facts: list[Fact], sents: list[Sentence]) -> list[QAPair]:
        assert self.questions is not None
        kept: dict[str, list[str]] = {f.fact_id: [] for f in facts}
        tried: dict[str, list[str]] = {f.fact_id: [] for f in facts}
        by_id = {f.fact_id: f for f in facts}
        sentence_of = {f.fact_id: next((s for s in sents if s.start <= f.start < s.end), None) for f in facts}
        siblings: dict[int, list[Fact]] = {}
        for f in facts:
            s = sentence_of[f.fact_id]
            if s is not None:
                siblings.setdefault(s.start, []).append(f)
        pairs: list[QAPair] = []
        for round_ in range(1 + self.top_ups):
            plan = allocate({fid: len(qs) for fid, qs in kept.items()}, [f.fact_id for f in facts], self.k)
            groups = self._groups(plan, by_id, sentence_of, sents, tried)
            if not groups:
                break
            self.caller.progress.requests_added(len(groups))
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(self._ask(doc, chunk, g, round_)) for g in groups]
            for group, task in zip(groups, tasks, strict=True):
                for asked, question, request_key in task.result():
                    target = align(question, asked.fact, siblings[group.sentence.start], group.sentence.start)
                    f = target or asked.fact
                    if target is not None and target.fact_id != asked.fact.fact_id:
                        self.caller.stats.ledger["realigned"] += 1
                    tried[asked.fact.fact_id].append(question)
                    verdict = check_question(question, f, doc.title) or ("" if target else "off_target")
                    repaired = None
                    if verdict in REPAIRABLE and self.refiner is not None and self.questions.refine:
                        draft = self._pair(doc, chunk, f, question, request_key, len(pairs), "")
                        outcome = await self.refiner.refine(draft, doc, chunk)
                        if outcome.revisions:  # a repair the checks accepted
                            repaired, question, verdict = outcome.final, outcome.final.question, ""
                    if not verdict and len(kept[f.fact_id]) >= self.k:
                        verdict = "surplus"
                    if not verdict and near_duplicate(question, (q for qs in kept.values() for q in qs)):
                        verdict = "duplicate"
                    if not verdict:
                        kept[f.fact_id].append(question)
                    if repaired is not None:
                        extra = tuple((k, v) for k, v in repaired.extra if k != "check")
                        pairs.append(replace(repaired, extra=extra + ((("check", verdict),) if verdict else ())))
                    else:
                        pairs.append(self._pair(doc, chunk, f, question, request_key, len(pairs), verdict))
        self.caller.stats.ledger["questions_kept"] += sum(len(qs) for qs in kept.values())
        self.caller.stats.ledger["facts_at_k"] += sum(len(qs) >= self.k for qs in kept.values())
        return pairs

    def _groups(self, plan: Mapping[str, int], by_id: Mapping[str, Fact], sentence_of: Mapping[str, Sentence | None],
                sents: list[Sentence], tried: Mapping[str, list[str]]) -> list[_Group]:
        """This round's requests: per sentence, its facts that still need questions, ``n`` to a request."""
        assert self.questions is not None
        per_sentence: dict[int, list[Fact]] = {}
        for fid, need in plan.items():
            s = sentence_of[fid]
            if need > 0 and s is not None:
                per_sentence.setdefault(s.start, []).append(by_id[fid])
        groups = []
        for start in sorted(per_sentence):
            sentence = next(s for s in sents if s.start == start)
            i = sents.index(sentence)
            before = sents[i - 1].text if i > 0 and not sents[i - 1].text.startswith("#") else ""
            facts = sorted(per_sentence[start], key=lambda f: f.start)
            for j in range(0, len(facts), self.questions.n):
                part = facts[j:j + self.questions.n]
                items = [_Asked(f, n + 1, plan[f.fact_id], tuple(tried[f.fact_id][-4:])) for n, f in enumerate(part)]
                groups.append(_Group(sentence, before, items))
        return groups

    def _pair(self, doc: Document, chunk: Chunk, fact: Fact, question: str, request_key: str, index: int,
              verdict: str) -> QAPair:
        assert self.questions is not None
        extra = [("fact_id", fact.fact_id), ("sentence", fact.sentence)] + ([("check", verdict)] if verdict else [])
        return QAPair(
            pair_id=ids.hash_str("pair", request_key, chunk.chunk_id, str(index), question, fact.span),
            chunk_id=chunk.chunk_id, doc_id=doc.doc_id, perspective=self.questions.id, question=question,
            answer=fact.span, request_key=request_key, model=self.caller.model_for(self.questions.role),
            extra=tuple(extra))

    async def _ask(self, doc: Document, chunk: Chunk, group: _Group, round_: int) -> list[tuple[_Asked, str, str]]:
        """One request for one sentence's facts: (the fact asked, a question, the request key) per question."""
        assert self.questions is not None
        c, prompt = self.caller, self.questions
        c.stats.calls[prompt.id] += 1
        size = (len(group.items), max(a.need for a in group.items))
        seed = (round_ + 1000 * self.seed) or None
        items = [{"number": a.number, "need": a.need, "asked": a.asked} for a in group.items]
        request = build_request(self.prompts, prompt, doc, chunk, c.model_for(prompt.role), seed=seed, size=size,
                                marked=group.marked(), before=group.before, items=items,
                                asked=any(a.asked for a in group.items))
        result = await c.ask_structured(prompt, request, chunk, size=size)
        if result is None:
            return []
        obj, request = result
        by_number = {a.number: a for a in group.items}
        out: list[tuple[_Asked, str, str]] = []
        for item in obj.model_dump()["items"]:
            asked = by_number.get(int(item["number"]))
            if asked is None:
                c.stats.ledger["unmatched_answers"] += 1
                continue
            for q in item["questions"][: asked.need]:
                q = q.strip()
                if q and not q.endswith("?") and _QUESTION_WORD.match(q):
                    q += "?"  # a question that lost its mark (a small teacher's habit) is still a question
                if q:
                    out.append((asked, q, request.key))
        return out

    def _cloze(self, doc: Document, chunk: Chunk, facts: list[Fact]) -> list[QAPair]:
        assert self.cloze is not None
        pairs = []
        for f in facts:
            at = chunk.text.find(f.sentence)
            blanked = cloze_sentence(f, follow=chunk.text[at + len(f.sentence):] if at >= 0 else "")
            if not blanked:
                continue
            if f.kind == "subject":  # "What is the great object ..., and I shall derive ...": its own clause only
                blanked = re.split(r",\s+(?:and|but|or)\s+|;\s", blanked)[0]
            echo = blanked.rstrip(" .!?;:").replace("____", wh_word(f), 1)
            echo = echo[:1].upper() + echo[1:] if blanked.startswith("____") else echo  # "What is the great ...?"
            question = self.cloze.render_question("blank", title=chunk.title, sentence=blanked, echo=echo)
            entry = definition(f)  # "copy.copy(x)\n: Return a shallow copy of x.": asked both ways by template
            if entry is not None:
                term, text = entry
                question = self.cloze.render_question("entry", title=chunk.title, definition=text.rstrip(". "))
                define = self.cloze.render_question("define", title=chunk.title, term=term)
                pairs.append(QAPair(
                    pair_id=ids.hash_str("pair", "define", chunk.chunk_id, f.fact_id, define), chunk_id=chunk.chunk_id,
                    doc_id=doc.doc_id, perspective=self.cloze.id, question=define, answer=text, request_key="",
                    model="", extra=(("fact_id", f.fact_id), ("sentence", f.sentence), ("kind", "definition"))))
            if leaks(question, f.span):  # the title or the rest of the sentence gives it away
                continue
            pairs.append(QAPair(
                pair_id=ids.hash_str("pair", "cloze", chunk.chunk_id, f.fact_id, question), chunk_id=chunk.chunk_id,
                doc_id=doc.doc_id, perspective=self.cloze.id, question=question, answer=f.span, request_key="",
                model="", extra=(("fact_id", f.fact_id), ("sentence", f.sentence), ("kind", "cloze"))))
        return pairs
