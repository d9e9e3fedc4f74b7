"""Files the project reads and writes: atomic writes (a reader, or a killed run, never sees a half-written file
or directory), JSON and YAML readers with user-facing errors, and what --overwrite may replace."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from farmcli.errors import UserError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``, on error remove it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; results are shared like any other file
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _temp_prefix(path: Path) -> str:
    """Temporaries are named .NAME.PID.RANDOM.tmp: the PID says whether their writer still runs."""
    return f".{path.name}.{os.getpid()}."


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
            pass
        except (PermissionError, OverflowError):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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
    return raw


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary directory beside ``path``; on success it replaces ``path``.

    With ``overwrite=False`` an existing ``path`` is an error raised by the caller beforehand;
    here an existing target is moved aside first and removed only after the new one is in place.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
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
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


WRITTEN_BY = "written_by"
"""The manifest key where farm lists what it wrote into a dataset (readers of DATA_FORMAT.md ignore it)."""


def seal_dataset(root: Path, command: str) -> None:
    """Record in ``root``/manifest.json every file farm wrote there (relative path -> size in bytes).

    Call it last, when every other file is in place. ``--overwrite`` later replaces the dataset only while its
    files are exactly these: a dataset made by hand, or a file added or rewritten by the user, stays untouched.
    """
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
    """The absolute path a command may write its output directory to, or a UserError saying why not.

    ``--overwrite`` replaces only an empty directory or a dataset farm wrote (every file in it as farm wrote
    it); a directory holding anything else is the user's and is left alone.
    """
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
    """An existing output ``name`` is replaced only with --overwrite, and only where farm wrote it (``ours()``, e.g.
    ``written_by_farm``); anything else there is the user's and is left alone."""
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
    """Before any work: ``path`` can be written, and an existing file there is replaced only with --overwrite and
    only when farm wrote it (a parquet file in one of ``formats``)."""
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
