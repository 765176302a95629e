"""What a file must be before bulkonboard writes to it as its journal, and how a new journal comes to exist.

Why: SQLite writes whatever file it is given, and the journal used to be opened for writing at once (WAL mode,
then `CREATE TABLE IF NOT EXISTS`): an unrelated database got our tables, a 0-byte file was taken as a fresh
journal, a read-only journal was chmod-ed and written. Now, before any write:

- the path must be a regular file that is not empty (bulkonboard never leaves an empty journal: a new one is
  built under a temporary name and linked into place whole, so an empty file is someone else's) and starts with
  SQLite's header;
- the file must carry bulkonboard's SQLite application id (`PRAGMA application_id`), or be a journal of an
  earlier release (no id yet, but our `meta` table saying `format = bulkonboard-journal`), which is then given
  the id in the same transaction that checks it;
- the file and its folder must be writable as they are: bulkonboard never changes a journal's permissions (a
  read-only journal may be read-only on purpose), and SQLite's WAL needs to create `-wal` and `-shm` files beside
  it;
- `PRAGMA quick_check` must pass (a damaged page is reported before anything is written, and the file is left
  as it is for inspection; ~0.2 s for a 200,000-row journal).

Which exit: a file that is not a journal (empty, not SQLite, another program's database, another service's
journal) is the person naming the wrong file: `JournalError`, exit 2, nothing touched. A journal that IS one but
cannot be written or read (read-only, a read-only folder, a damaged page, a full disk, an I/O error) is
bulkonboard's own work that cannot go on: `JournalFailure`, exit 4, as the contract says of a journal not
writable.
"""

from __future__ import annotations

import glob
import os
import sqlite3
import stat
from pathlib import Path

from ..errors import InputError, OwnFailure

FORMAT = "bulkonboard-journal"
#: `PRAGMA application_id` of every journal: "BkOb". Journals of releases before it have 0 and our meta table.
APPLICATION_ID = 0x426B4F62
SQLITE_HEADER = b"SQLite format 3\x00"
#: The tables a journal holds; a database with others is not one (whatever its meta table says).
JOURNAL_TABLES = frozenset({"meta", "runs", "rows", "steps"})


class JournalError(InputError):
    """The file named is not a usable journal: not a journal, another service's, a newer format, no such file.

    Exit 2, like any other unusable path given on the command line; nothing was written to it."""


class JournalFailure(OwnFailure):
    """The journal is one, but bulkonboard cannot read or write it: read-only, a read-only folder, a damaged
    page, a full disk, an I/O error. Exit 4: bulkonboard's own work cannot go on (a run must stop sending: a
    request whose record cannot be written could not be reconciled after a crash)."""


def check_file(path: Path, *, create: bool) -> bool:
    """Everything that can be told of the file before SQLite opens it. Returns True if it must be created."""
    try:
        info = path.stat()
    except FileNotFoundError:
        if not create:
            raise JournalError(f"{path}: no such journal") from None
        return True
    except OSError as exc:
        raise JournalError(f"{path}: cannot open the journal ({exc.strerror or exc})") from None
    if not stat.S_ISREG(info.st_mode):
        raise JournalError(f"{path}: the journal path is not a file")
    if info.st_size == 0:
        raise JournalError(
            f"{path}: is an empty file (0 bytes), not a bulkonboard journal (a new journal is never left empty); "
            "delete it to start a new journal there, or give another --journal"
        )
    try:
        with path.open("rb") as handle:
            header = handle.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise JournalFailure(f"{path}: cannot read the journal ({exc.strerror or exc})") from None
    if header != SQLITE_HEADER:
        raise JournalError(f"{path}: is not an SQLite file, so not a bulkonboard journal; give another --journal")
    _check_writable(path, info)
    return False


def _check_writable(path: Path, info: os.stat_result) -> None:
    folder = path.parent
    try:
        read_only_disk = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        read_only_disk = False
    if read_only_disk:
        raise JournalFailure(
            f"{path}: the journal is on a read-only file system, and a run must write it (and its -wal and -shm "
            "files beside it); give a --journal on a writable disk"
        )
    mode = stat.S_IMODE(info.st_mode)
    if not mode & stat.S_IWUSR:
        raise JournalFailure(
            f"{path}: the journal is read-only (mode {mode:04o}) and bulkonboard never changes a journal's "
            "permissions; make it writable (chmod u+w) to run with it, or give another --journal"
        )
    if not os.access(path, os.W_OK):
        raise JournalFailure(
            f"{path}: the journal is not writable by this user (mode {mode:04o}, owner uid {info.st_uid}); "
            "run as its owner, or give another --journal"
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise JournalFailure(
            f"{path}: the journal's folder {folder} is read-only, and SQLite must create the journal's -wal and "
            "-shm files beside it; make the folder writable, or give a --journal in another folder"
        )


def check_identity(connection: sqlite3.Connection, path: Path) -> bool:
    """Read-only: is this database a journal? True if it is one of an earlier release, to be given the id.

    Raises `JournalError` (exit 2) for any other database, `JournalFailure` (exit 4) for a damaged journal."""
    try:
        (application_id,) = connection.execute("PRAGMA application_id").fetchone()
        tables = {name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if application_id == APPLICATION_ID:
            return False
        if application_id != 0:
            raise JournalError(
                f"{path}: is another program's SQLite database (application id {application_id:#010x}), not a "
                "bulkonboard journal; nothing was changed in it: give another --journal"
            )
        format_row = (
            connection.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
            if "meta" in tables
            else None
        )
    except sqlite3.DatabaseError as exc:
        raise failed(path, "read", exc) from None
    if format_row is not None and format_row[0] == FORMAT and tables <= JOURNAL_TABLES:
        return True
    raise JournalError(f"{path}: is an SQLite database but not a bulkonboard journal ({_tables_text(tables)}); "
                       "nothing was changed in it: give another --journal")


def check_integrity(connection: sqlite3.Connection, path: Path) -> None:
    """A damaged page is found now, before anything is written over it, rather than in the middle of a run."""
    try:
        (verdict,) = connection.execute("PRAGMA quick_check(1)").fetchone()
    except sqlite3.DatabaseError as exc:
        raise failed(path, "read", exc) from None
    if verdict != "ok":
        raise damaged(path, verdict)


def damaged(path: Path, what: object) -> JournalFailure:
    return JournalFailure(
        f"{path}: the journal is damaged ({_first_line(what)}); it was left as it is for inspection: restore it "
        "from a backup, or give a new --journal (a rerun then settles rows by what the tenant holds)"
    )


def failed(path: Path, doing: str, error: BaseException) -> JournalFailure:
    """A read or write of a journal failed (a full disk, an I/O error, a damaged page)."""
    code = getattr(error, "sqlite_errorname", "") or ""
    if code.startswith("SQLITE_CORRUPT") or code == "SQLITE_NOTADB" or "malformed" in str(error):
        return damaged(path, error)
    return JournalFailure(f"{path}: cannot {doing} the journal ({_first_line(error)})")


def create(path: Path) -> None:
    """A new journal: built under a temporary name (mode 0600, application id, WAL) and linked into place whole,
    so that no run ever finds a half-made journal, an empty file, where a journal should be. The caller holds
    the run lock of `path`: a temporary left by a creation killed before (kill -9) is nobody's, and removed."""
    _make_private_dir(path.parent)
    for leftover in path.parent.glob(f".{glob.escape(path.name)}.new-*"):
        leftover.unlink(missing_ok=True)
    temporary = path.with_name(f".{path.name}.new-{os.getpid()}")
    try:
        os.close(os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600))
        connection = sqlite3.connect(temporary, isolation_level=None)
        try:
            connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            connection.execute("PRAGMA journal_mode = WAL")
        finally:
            connection.close()
        _link_into_place(temporary, path)
    except (OSError, sqlite3.Error) as exc:
        text = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise JournalError(f"{path}: cannot create the journal ({text})") from None
    finally:
        for leftover in (temporary, Path(f"{temporary}-wal"), Path(f"{temporary}-shm")):
            leftover.unlink(missing_ok=True)


def _link_into_place(temporary: Path, path: Path) -> None:
    try:
        os.link(temporary, path)
    except FileExistsError:
        return  # made meanwhile by someone else: checked like any existing file
    except OSError:  # a file system without hard links
        if not path.exists():
            os.rename(temporary, path)


def _make_private_dir(directory: Path) -> None:
    if directory.is_dir():
        return
    try:
        directory.mkdir(parents=True, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise JournalError(
            f"{directory}: cannot create the journal's directory ({exc.strerror or exc})"
        ) from None


def _tables_text(tables: set[str]) -> str:
    if not tables:
        return "it holds no tables"
    names = sorted(tables)
    shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
    return f"its tables: {shown}"


def _first_line(what: object) -> str:
    return str(what).strip().splitlines()[0] if str(what).strip() else type(what).__name__
