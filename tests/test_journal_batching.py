"""The journal's batched commit: one batch applied as grouped statements ends as if applied record by record."""

from __future__ import annotations

import random
import threading
from pathlib import Path

import pytest

from bulkonboard.journal import commits as journal_commits
from bulkonboard.journal.store import (
    _CREATED_SQL,
    _FAILED_SQL,
    _SENT_SQL,
    _grouped,
    _Write,
    open_journal,
)
from bulkonboard.model import RowResult, Status


def _batch(seed: int) -> list[_Write]:
    chooser = random.Random(seed)
    writes = []
    for n in range(300):
        key = f"u{chooser.randrange(20)}@contoso.com"
        sql = chooser.choice([_SENT_SQL, _CREATED_SQL, _FAILED_SQL])
        writes.append(_Write(sql, ("c", key, key, n, f"req-{n}", f"id-{n}", f"reason {n}", 1, f"t{n:04d}")))
    return writes


def test_grouped_batch_ends_like_one_record_at_a_time(tmp_path: Path) -> None:
    for seed in range(5):
        batch = _batch(seed)
        one_by_one = open_journal(tmp_path / f"a{seed}.sqlite", service="https://pc.example")
        grouped = open_journal(tmp_path / f"b{seed}.sqlite", service="https://pc.example")
        with one_by_one, grouped:
            for write in batch:
                one_by_one._writer.execute(write.sql, write.params)
            calls = _grouped(batch)
            assert len(calls) < len(batch) / 2  # grouped: about 15 records per key, 4 statements
            for sql, params in calls:
                grouped._writer.executemany(sql, params)
            assert one_by_one.rows() == grouped.rows()


def test_checkpoint_thread_runs_and_stops_with_the_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal_commits, "_CHECKPOINT_RECORDS", 1)
    journal = open_journal(tmp_path / "j.sqlite", service="https://pc.example")
    journal.finished("c", "a@contoso.com", RowResult(2, "a@contoso.com", Status.CREATED, userId="id-a"))
    journal.flush()
    assert any(t.name == "journal-checkpoint" for t in threading.enumerate())
    journal.close()
    assert not any(t.name == "journal-checkpoint" for t in threading.enumerate())
    assert not (tmp_path / "j.sqlite-wal").exists()
