"""Files the project reads and writes: atomic writes (a reader, or a killed run, never sees a half-written file
or directory), JSON and YAML readers with user-facing errors, and what --overwrite may replace."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

from farmcli.errors import UserError

_active: dict[Path, Path] = {}
"""Temporaries being written -> their targets: a hard exit removes them, a write error names the target."""


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


def remove_active_temps() -> None:
    """Remove every temporary this process is writing (the process is about to end without unwinding)."""
    for tmp in list(_active):
        with contextlib.suppress(OSError):
            _remove(tmp)
    _active.clear()


def active_target() -> Path | None:
    """The output this process is writing now (the innermost atomic write), if any."""
    return next(reversed(_active.values()), None)


def disk_full(e: BaseException) -> OSError | None:
    """The "disk full" (or quota) error behind ``e``, else None: of the failures chained ``from`` one another
    (one failure) or raised while handling one (a later one), the earliest naming its file (a copy's target first)."""
    failures: list[list[OSError]] = []
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        group: list[OSError] = []
        while cur is not None and id(cur) not in seen:  # one failure: renamed with `raise ... from`
            seen.add(id(cur))
            if isinstance(cur, OSError) and cur.errno in (errno.ENOSPC, errno.EDQUOT):
                group.append(cur)
            if cur.__cause__ is None:
                break
            cur = cur.__cause__
        failures.append(group)
        cur = cur.__context__ if cur is not None else None  # the failure this one was raised while handling
    for group in reversed(failures):
        named = [x for x in group if x.filename2 is not None] or [x for x in group if x.filename is not None]
        if named:
            return named[0]
    return next((x for group in failures for x in group), None)


def _named(e: BaseException, path: Path, tmp: Path | None = None) -> OSError | None:
    """``e`` (raised writing ``path`` through ``tmp``) as an OSError naming ``path`` where it names no file or one in
    ``tmp`` (pyarrow, numpy) or is a native writer's full disk (torch, polars); else None."""
    if isinstance(e, OSError):
        if e.errno is None:
            return None
        if e.filename is None:
            return OSError(e.errno, os.strerror(e.errno), str(path))
        if tmp is not None and Path(e.filename).is_relative_to(tmp):
            return OSError(e.errno, os.strerror(e.errno), str(path / Path(e.filename).relative_to(tmp)))
        return None
    text = str(e)
    if "No space left on device" in text or isinstance(e, RuntimeError) and "file write failed" in text:
        try:
            full = "No space left" in text or shutil.disk_usage(path.parent).free < 1 << 24
        except OSError:
            full = False
        if full:
            return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    return None


@contextlib.contextmanager
def _temporary(path: Path, is_dir: bool) -> Iterator[Path]:
    """A temporary file or directory beside ``path``, removed however the block ends; a write error that names
    no file (a full disk met by pyarrow, numpy or torch) is raised naming ``path``, so the CLI says which output."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    prefix = f".{path.name}.{os.getpid()}."  # .NAME.PID.RANDOM.tmp: the PID says whether its writer still runs
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=path.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
    _active[tmp] = path
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, (0o777 if is_dir else 0o666) & ~umask)  # mkstemp makes 0600; outputs are shared
        yield tmp
    except Exception as e:  # noqa: BLE001 - polars says a full disk in a ComputeError
        named = _named(e, path, tmp if is_dir else None)
        if named is None:
            raise
        raise named from e
    finally:
        _active.pop(tmp, None)
        _remove(tmp)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``, on error remove it."""
    with _temporary(Path(path), is_dir=False) as tmp:
        yield tmp
        os.replace(tmp, path)


def remove_stale_temps(path: Path) -> None:
    """Remove temporaries of ``path`` left by a writer that no longer runs (killed by SIGKILL, a power cut)."""
    import re

    pattern = re.compile(rf"^\.{re.escape(path.name)}\.(\d+)\.[^.]+\.tmp$")
    try:
        siblings = list(path.parent.iterdir())
    except OSError:
        return
    for p in siblings:
        m = pattern.match(p.name)
        if not m or int(m.group(1)) == os.getpid():
            continue
        try:
            os.kill(int(m.group(1)), 0)
            continue  # its writer still runs
        except ProcessLookupError:
            _remove(p)
        except (PermissionError, OverflowError):
            continue


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def read_json(path: str | os.PathLike) -> dict:
    """A JSON object the project wrote (run.json, eval-*.json), or {} when it is missing or unreadable."""
    try:
        obj = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return obj if isinstance(obj, dict) else {}


def read_record(path: Path, unreadable: str) -> dict:
    """A record of an output's settings (ablation.json, tune.json); unreadable: a UserError ending ``unreadable``."""
    try:
        obj = json.loads(path.read_bytes())
    except OSError as e:
        raise UserError(f"{path}: cannot read it ({e.strerror or e}). Check its permissions.") from None
    except ValueError as e:
        raise UserError(f"{path} is unreadable (not valid JSON: {e}), so {unreadable}") from None
    if not isinstance(obj, dict):
        raise UserError(f"{path} is unreadable (not a JSON object), so {unreadable}")
    return obj


def load_yaml(path: str | os.PathLike, what: str = "config") -> dict[str, Any]:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: no such {what} file.") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read this {what} file ({e.strerror or e}).") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid YAML ({e}).") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise UserError(f"{path}: a {what} file holds a mapping (key: value), not a {type(raw).__name__}.")
    if _holds_itself(raw):
        raise UserError(
            f"{path}: a YAML anchor refers to itself (e.g. `a: &a [*a]`), so this {what} never ends. Write the "
            f"value out, or point the alias at another node."
        )
    return raw


def _holds_itself(x: Any, ancestors: tuple[int, ...] = ()) -> bool:
    """A mapping or list that contains itself (a self-referencing YAML anchor); a node shared by two aliases is fine."""
    if not isinstance(x, (dict, list)):
        return False
    if id(x) in ancestors:
        return True
    inside = (*ancestors, id(x))
    return any(_holds_itself(v, inside) for v in (x.values() if isinstance(x, dict) else x))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = False, what: str | None = None) -> Iterator[Path]:
    """Yield an empty temporary directory beside ``path``; on success it replaces ``path`` (an old one is moved
    aside and removed only after). Holds ``path``'s lock (``what``: "the dataset" or "the sample store"); a ``path``
    that appeared since the caller checked raises FileExistsError before any work (without ``overwrite``)."""
    from farmcli import locks

    path = Path(path)
    if what is None:
        what = "the sample store" if path.name.startswith("samples-") else "the dataset"
    option = None if what == "the sample store" else "--out"
    path.parent.mkdir(parents=True, exist_ok=True)
    with locks.hold(path, what, option):
        if path.exists() and not overwrite:
            raise FileExistsError(errno.EEXIST, "written meanwhile by another farm command", str(path))
        with staging_dir(path) as tmp:  # a failed write names the path and leaves no temporary behind
            yield tmp
            old = None
            if path.exists():
                if not overwrite:
                    raise FileExistsError(path)
                old = path.with_name(f".{path.name}.old-{os.getpid()}")
                os.replace(path, old)
            os.replace(tmp, path)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)


def staging_dir(path: str | os.PathLike) -> contextlib.AbstractContextManager[Path]:
    """An empty temporary directory beside ``path``, removed however the block ends; ``move_into`` places its files."""
    return _temporary(Path(path), is_dir=True)


def move_into(staged: Path, out: Path, names: Iterable[str], remove: Iterable[str] = ()) -> None:
    """Move the files ``names`` from ``staged`` into ``out`` and delete ``remove`` from ``out``, as one step for
    Ctrl-C and SIGTERM: they are held back until every file is in place (renames on one disk: no new space)."""
    import signal
    import threading

    out.mkdir(parents=True, exist_ok=True)
    caught: list[int] = []
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for held in (signal.SIGINT, signal.SIGTERM):
            previous[held] = signal.signal(held, lambda signum, frame: caught.append(signum))
    try:
        for name in names:
            os.replace(staged / name, out / name)
        for name in remove:
            (out / name).unlink(missing_ok=True)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    for got in caught[:1]:  # now that every file is in place, the signal does what it would have done
        handler = previous[got]
        if callable(handler):
            handler(got, None)
        elif handler == signal.SIG_DFL:
            signal.raise_signal(got)


WRITTEN_BY = "written_by"
"""The manifest key where farm lists what it wrote into a dataset (readers of DATA_FORMAT.md ignore it)."""


def seal_dataset(root: Path, command: str) -> None:
    """Record in ``root``/manifest.json every file farm wrote there (path -> size), last: ``--overwrite`` later
    replaces the dataset only while its files are exactly these (a file the user added or changed stays)."""
    from farmcli._version import __version__

    manifest_path = root / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    files = {
        p.relative_to(root).as_posix(): p.stat().st_size
        for p in sorted(root.rglob("*"))
        if p.is_file() and p != manifest_path
    }
    manifest[WRITTEN_BY] = {"program": f"farmcli {__version__}", "command": command, "files": files}
    manifest_path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")


def foreign_content(path: Path) -> str | None:
    """Why ``path`` is not a dataset farm wrote (None when it is): what --overwrite must leave alone."""
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError):
        return "it has no readable manifest.json"
    if not isinstance(manifest, dict) or not str(manifest.get("format", "")).startswith("farm-events/"):
        return "its manifest.json is not a farm-events manifest"
    mark = manifest.get(WRITTEN_BY)
    files = mark.get("files") if isinstance(mark, dict) else None
    if not isinstance(files, dict):
        return (
            f"its manifest.json has no '{WRITTEN_BY}' mark: made outside farm, or by an older farm that did not "
            f"mark its datasets"
        )
    folders = {p for name in files for p in Path(name).parents}
    for dirpath, dirnames, filenames in os.walk(path):
        here = Path(dirpath)
        for name in dirnames:
            rel = (here / name).relative_to(path)
            if (here / name).is_symlink() or rel not in folders:
                return f"{rel.as_posix()} is not a folder farm wrote"
        for name in filenames:
            file = (here / name).relative_to(path).as_posix()
            if file == "manifest.json":
                continue
            if (here / name).is_symlink() or file not in files:
                return f"{file} is not a file farm wrote"
            if (here / name).stat().st_size != files[file]:
                return f"{file} changed since farm wrote it"
    return None


def output_dir(out: str | os.PathLike, overwrite: bool, what: str = "dataset") -> Path:
    """Where a command may write its output directory; --overwrite replaces only an empty one or farm's dataset."""
    path = Path(out).expanduser().resolve()
    if not path.exists():
        return path
    cwd = Path.cwd().resolve()
    if path == cwd or path in cwd.parents:
        raise UserError(
            f"--out {out} is the directory you are in (or holds it): an output directory is replaced "
            f"as a whole, which would leave your shell in a deleted directory. Give a new name, e.g. "
            f"--out ./{what}."
        )
    if not overwrite:
        raise UserError(
            f"{out} already exists; choose another --out or pass --overwrite to replace a {what} that farm wrote there."
        )
    if not path.is_dir():
        raise UserError(f"{out} is a file, not a {what} directory; it is left alone. Choose another --out.")
    why = foreign_content(path) if any(path.iterdir()) else None
    if why:
        raise UserError(
            f"{out} holds files that are not a {what} written by farm ({why}); --overwrite leaves them "
            f"alone. Choose another --out, or empty the directory yourself."
        )
    return path


def output_path(value: str | Path | None, option: str, example: str) -> Path | None:
    """The path an output option names; an empty one is an error (Path("") would silently mean ".")."""
    if value is None:
        return None
    if not str(value).strip():
        raise UserError(f"{option} is empty: give a path, e.g. {option} {example}.")
    return Path(value)


def in_the_way(path: Path) -> Path | None:
    """The nearest existing parent of ``path`` where it is a file, so no directory can be made for ``path``."""
    blocker = next((p for p in path.parents if p.exists()), None)
    return blocker if blocker is not None and not blocker.is_dir() else None


def check_replace(
    name: str, overwrite: bool, ours: Callable[[], bool], what: str, earlier: str = "it", another: str = "name", why=""
) -> None:
    """An existing output ``name`` is replaced only with --overwrite, and only where farm wrote it (``ours()``)."""
    if not overwrite:
        raise UserError(f"{name} exists; pass --overwrite to replace {earlier}, or choose another {another}.")
    if not ours():
        raise UserError(
            f"{name} exists and is not {what} written by farm{why}; it is left alone. Choose another {another}."
        )


def written_by_farm(path: Path, formats: tuple[str, ...]) -> bool:
    """Whether ``path`` is a parquet file farm wrote in one of ``formats`` (its key-value metadata says so)."""
    import pyarrow.parquet as pq

    try:
        meta = pq.read_metadata(path).metadata or {}
    except Exception:  # noqa: BLE001 - not a parquet file at all: not ours
        return False
    return meta.get(b"farmcli", b"").decode(errors="replace") in formats


def check_output_file(path: Path, option: str, overwrite: bool, formats: tuple[str, ...]) -> None:
    """Before any work: ``path`` can be written, and an existing one is farm's (``formats``) to --overwrite."""
    if path.is_dir():
        raise UserError(f"{option} {path} is a directory; give a file name, e.g. {path}/predictions.parquet.")
    blocker = in_the_way(path)
    if blocker is not None:
        raise UserError(
            f"{option} {path}: {blocker} is a file, so a file is in the way where a directory is needed. "
            f"Choose another path."
        )
    if path.exists():
        check_replace(f"{option} {path}", overwrite, lambda: written_by_farm(path, formats), "a predictions file")
