"""The state database's schema: the migrations, applied in order (``PRAGMA user_version`` counts them), and how a
worker's shard merges into the main store, table by table (``Database.merge_shard`` runs it)."""

from __future__ import annotations

MIGRATIONS: tuple[str, ...] = (
    # 1: initial schema
    """
    CREATE TABLE documents(
        doc_id TEXT PRIMARY KEY, path TEXT NOT NULL, title TEXT NOT NULL, fmt TEXT NOT NULL,
        n_chars INTEGER NOT NULL, meta TEXT NOT NULL, first_seen TEXT NOT NULL, last_seen TEXT NOT NULL);
    CREATE TABLE chunks(
        chunk_id TEXT PRIMARY KEY, doc_id TEXT NOT NULL, idx INTEGER NOT NULL, title TEXT NOT NULL,
        section TEXT NOT NULL, n_tokens INTEGER NOT NULL, text TEXT NOT NULL);
    CREATE INDEX chunks_by_doc ON chunks(doc_id, idx);
    CREATE TABLE requests(
        key TEXT PRIMARY KEY, role TEXT NOT NULL, prompt_id TEXT NOT NULL, prompt_hash TEXT NOT NULL,
        model TEXT NOT NULL, request TEXT NOT NULL, content TEXT NOT NULL, finish_reason TEXT NOT NULL,
        prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, latency_s REAL NOT NULL,
        attempts INTEGER NOT NULL, top_logprobs TEXT NOT NULL, run_id INTEGER, created_at TEXT NOT NULL);
    CREATE TABLE failures(
        id INTEGER PRIMARY KEY, run_id INTEGER NOT NULL, stage TEXT NOT NULL, request_key TEXT NOT NULL,
        prompt_id TEXT NOT NULL, chunk_id TEXT NOT NULL, error TEXT NOT NULL, retryable INTEGER NOT NULL,
        created_at TEXT NOT NULL);
    CREATE TABLE pairs(
        pair_id TEXT PRIMARY KEY, chunk_id TEXT NOT NULL, doc_id TEXT NOT NULL, perspective TEXT NOT NULL,
        request_key TEXT NOT NULL, question TEXT NOT NULL, answer TEXT NOT NULL, model TEXT NOT NULL,
        extra TEXT NOT NULL, created_at TEXT NOT NULL);
    CREATE TABLE runs(
        run_id INTEGER PRIMARY KEY, command TEXT NOT NULL, started_at TEXT NOT NULL, finished_at TEXT,
        status TEXT NOT NULL, settings TEXT NOT NULL, summary TEXT);
    CREATE TABLE run_pairs(
        run_id INTEGER NOT NULL, pair_id TEXT NOT NULL, sort_key TEXT NOT NULL, PRIMARY KEY(run_id, pair_id));
    CREATE TABLE run_docs(
        run_id INTEGER NOT NULL, doc_id TEXT NOT NULL, path TEXT NOT NULL, PRIMARY KEY(run_id, doc_id));
    """,
    # 2: refinement (critic -> regenerator rounds)
    """
    CREATE TABLE refinements(
        final_pair_id TEXT NOT NULL, round INTEGER NOT NULL, draft_pair_id TEXT NOT NULL,
        question TEXT NOT NULL, answer TEXT NOT NULL, critique TEXT NOT NULL, problems TEXT NOT NULL,
        needs_revision INTEGER NOT NULL, forced INTEGER NOT NULL, revised_question TEXT, revised_answer TEXT,
        PRIMARY KEY(final_pair_id, round));
    CREATE TABLE refined(
        final_pair_id TEXT PRIMARY KEY, draft_pair_id TEXT NOT NULL, revisions INTEGER NOT NULL,
        stop_reason TEXT NOT NULL);
    """,
    # 3: what happened to each of a run's pairs after generation: judge scores,
    # grounding, dedup, decontamination, and the verdict that decided export.
    # verdict: exported | judge_rejected | ungrounded | duplicate | contaminated
    """
    CREATE TABLE verdicts(
        run_id INTEGER NOT NULL, pair_id TEXT NOT NULL, verdict TEXT NOT NULL, detail TEXT NOT NULL,
        judge TEXT NOT NULL, judge_method TEXT NOT NULL, judge_score REAL, grounded INTEGER, grounding REAL,
        quote TEXT NOT NULL, duplicate_of TEXT, PRIMARY KEY(run_id, pair_id));
    """,
    # 4: the train -> eval -> notify flow (issue 4). A stage is done for a given
    # input key (a hash of what it consumed), so `qagen run` resumes where it stopped.
    # Notifications are kept until sent: SMTP being down never loses one.
    """
    CREATE TABLE stages(
        stage TEXT NOT NULL, key TEXT NOT NULL, run_id INTEGER NOT NULL, status TEXT NOT NULL,
        started_at TEXT NOT NULL, finished_at TEXT, result TEXT NOT NULL, PRIMARY KEY(stage, key));
    CREATE TABLE notifications(
        id INTEGER PRIMARY KEY, run_id INTEGER, kind TEXT NOT NULL, recipient TEXT NOT NULL,
        subject TEXT NOT NULL, body TEXT NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL,
        last_error TEXT NOT NULL, created_at TEXT NOT NULL, sent_at TEXT);
    """,
    # 5: rewrites of a chunk for continued pretraining (--cpt, OUT/cpt.jsonl), content-keyed like pairs, and
    # the run that produced them (run_rewrites, like run_pairs).
    """
    CREATE TABLE rewrites(
        rewrite_id TEXT PRIMARY KEY, chunk_id TEXT NOT NULL, doc_id TEXT NOT NULL, request_key TEXT NOT NULL,
        style TEXT NOT NULL, text TEXT NOT NULL, created_at TEXT NOT NULL);
    CREATE INDEX rewrites_by_chunk ON rewrites(chunk_id);
    CREATE TABLE run_rewrites(
        run_id INTEGER NOT NULL, rewrite_id TEXT NOT NULL, sort_key TEXT NOT NULL, PRIMARY KEY(run_id, rewrite_id));
    """,
    # 6: the fact ledger (qagen/generate/ledger.py): each chunk's answer spans with their sentences, content-keyed,
    # and the run that listed them (run_facts, like run_pairs).
    """
    CREATE TABLE facts(
        fact_id TEXT PRIMARY KEY, chunk_id TEXT NOT NULL, doc_id TEXT NOT NULL, span TEXT NOT NULL,
        sentence TEXT NOT NULL, start INTEGER NOT NULL, kind TEXT NOT NULL, source TEXT NOT NULL,
        created_at TEXT NOT NULL);
    CREATE INDEX facts_by_chunk ON facts(chunk_id);
    CREATE TABLE run_facts(
        run_id INTEGER NOT NULL, fact_id TEXT NOT NULL, sort_key TEXT NOT NULL, PRIMARY KEY(run_id, fact_id));
    """,
    # 7: the repair loop (issue 27): whether a round's revision passed every check, and which ones it failed
    """
    ALTER TABLE refinements ADD COLUMN accepted INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE refinements ADD COLUMN failed_checks TEXT NOT NULL DEFAULT '[]';
    """,
    # 8: `qagen review` (issue 32): a human's decision on a pair, keyed by the pair's content (chunk, question,
    # answer) so it survives re-runs; an edit keeps the original beside it. Calibrations: judge thresholds set
    # from the ratings (`qagen review --calibrate`), kept as a record.
    """
    CREATE TABLE reviews(
        review_key TEXT PRIMARY KEY, pair_id TEXT NOT NULL, decision TEXT NOT NULL, question TEXT, answer TEXT,
        original_question TEXT NOT NULL, original_answer TEXT NOT NULL, updated_at TEXT NOT NULL);
    CREATE TABLE calibrations(
        id INTEGER PRIMARY KEY, run_id INTEGER NOT NULL, check_name TEXT NOT NULL, threshold REAL NOT NULL,
        metric TEXT NOT NULL, value REAL NOT NULL, rated INTEGER NOT NULL, created_at TEXT NOT NULL);
    """,
)


# Per table: how a shard's rows join the main store. Content-keyed rows are
# immutable (OR IGNORE); per-run rows take the shard's (OR REPLACE);
# failures get new ids.
MERGE = (
    "INSERT OR IGNORE INTO main.requests SELECT * FROM shard.requests",
    "INSERT INTO main.documents SELECT * FROM shard.documents WHERE true ON CONFLICT(doc_id) DO UPDATE SET "
    "path=excluded.path, title=excluded.title, last_seen=excluded.last_seen",
    "INSERT OR IGNORE INTO main.chunks SELECT * FROM shard.chunks",
    "INSERT INTO main.failures(run_id, stage, request_key, prompt_id, chunk_id, error, retryable, created_at) "
    "SELECT run_id, stage, request_key, prompt_id, chunk_id, error, retryable, created_at FROM shard.failures "
    "ORDER BY id",
    "INSERT OR IGNORE INTO main.pairs SELECT * FROM shard.pairs",
    "INSERT OR REPLACE INTO main.run_pairs SELECT * FROM shard.run_pairs",
    "INSERT OR REPLACE INTO main.run_docs SELECT * FROM shard.run_docs",
    "INSERT OR REPLACE INTO main.refinements SELECT * FROM shard.refinements",
    "INSERT OR REPLACE INTO main.refined SELECT * FROM shard.refined",
    "INSERT OR REPLACE INTO main.verdicts SELECT * FROM shard.verdicts",
    "INSERT OR IGNORE INTO main.rewrites SELECT * FROM shard.rewrites",
    "INSERT OR REPLACE INTO main.run_rewrites SELECT * FROM shard.run_rewrites",
    "INSERT OR IGNORE INTO main.facts SELECT * FROM shard.facts",
    "INSERT OR REPLACE INTO main.run_facts SELECT * FROM shard.run_facts",
)
