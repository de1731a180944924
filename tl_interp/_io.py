"""Crash-safe, checksummed files: every artefact tl_interp writes goes through here.

Writes are atomic: content goes to a temporary sibling, is fsynced, and renamed into place
(then the directory is fsynced), so a reader, an interrupted run or a power cut never leaves
half a file where a loader looks. A temporary left by a killed writer is removed by the next
write to the same target (temporaries carry their writer's pid; only dead writers' are
removed). Files get ordinary permissions, ``0666 & ~umask``.

Every artefact carries a SHA-256 checksum that its loader verifies before using it:

- a JSON document (model card, cache config) embeds ``"checksum": "sha256:<hex>"`` over its
  canonical content (``checked_json`` / ``read_checked_json``);
- a single safetensors file (a saved ``Result`` or ``SteeringVector``) stores the checksum of
  its tensors and metadata in its own header (``save_checked`` / ``load_checked``);
- a directory (zoo, SAE folder, model cache entry) is described by a JSON manifest,
  ``{relative path: {"bytes", "sha256"}}``, that lives in its checksummed card or config
  (``manifest`` / ``verify_manifest``).

Hashing is a streaming SHA-256 of each file, once per load: 0.46 s for a 650 MB file on this
machine's CPU (SHA-NI), so no sampling scheme is needed. A mismatch, a truncated, empty or
foreign file raises ``ArtifactError`` naming the file and the fix.

Every writer checks its target first (``check_target``): a path that is a directory, or lies
under a file, is refused with an ``ArtifactError`` naming it and the fix, not an OS error
naming a hidden temporary. Whether an existing file may be replaced is the caller's rule: a
path the user named (``Result.save(path)``, ``-o``) is replaced like any save; a name the
user did not give is not (``refuse_existing``).
"""

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from tl_interp.errors import ArtifactError

__all__ = [
    "atomic_file",
    "check_target",
    "refuse_existing",
    "atomic_dir",
    "remove_stale",
    "sha256_file",
    "write_checked_json",
    "read_checked_json",
    "manifest",
    "verify_manifest",
    "save_checked",
    "load_checked",
    "CHECKSUM_KEY",
]

CHECKSUM_KEY = "checksum"
_HEADER_KEY = "tl_interp.sha256"
_BLOCK = 1 << 22


def _umask() -> int:
    # /proc gives the mask without changing it; os.umask(0) would briefly change it for
    # every thread of the process
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def remove_stale(parent: Path, prefix: str) -> None:
    """Delete ``prefix<pid>-...`` temporaries in ``parent`` whose writer process is gone.

    Example:
        >>> remove_stale(Path(tempfile.mkdtemp()), ".x.tmp-")  # nothing to remove
    """
    pattern = re.compile(re.escape(prefix) + r"(\d+)-")
    with contextlib.suppress(OSError):
        for entry in parent.iterdir():
            match = pattern.match(entry.name)
            if match and int(match.group(1)) != os.getpid() and not _pid_alive(int(match.group(1))):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)


def check_target(final: str | os.PathLike[str], *, directory: bool = False) -> Path:
    """Refuse a target a writer can't replace: a directory (a file writer) or a file (a
    directory writer), or a path under a file.

    Args:
        final: The path about to be written.
        directory: Whether the writer publishes a directory (else one file).

    Returns:
        ``final`` as a ``Path``.

    Raises:
        ArtifactError: naming the path, what is in the way, and the fix.

    Example:
        >>> check_target(tempfile.mkdtemp())  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        tl_interp.errors.ArtifactError: can't write '...': it is a directory, and this writes one file; ...
    """
    target = Path(final)
    if not directory and target.is_dir():
        raise ArtifactError(f"can't write {str(target)!r}: it is a directory, and this writes one file; pass a file "
                            f"path, e.g. {str(target / 'name')!r}, or another name")
    if directory and target.exists() and not target.is_dir():
        raise ArtifactError(f"can't write the folder {str(target)!r}: a file of that name is in the way; remove it "
                            "or choose another directory")
    for parent in target.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ArtifactError(f"can't write {str(target)!r}: {str(parent)!r} is a file, not a directory; "
                                    "choose a path in a directory")
            break
    return target


def refuse_existing(path: str | os.PathLike[str], *, inputs: Iterable[str | os.PathLike[str]] = (),
                    named: bool, fix: str) -> Path:
    """Refuse to write ``path`` over one of ``inputs``, or over an existing file the user didn't name.

    Args:
        path: The output about to be written.
        inputs: Files this command reads (never written over, whatever ``named`` says).
        named: Whether the user named ``path`` (then an existing file is replaced, as any save does).
        fix: How to replace or avoid it (ends the message), e.g. "pass --force or -o".

    Returns:
        ``path`` as a ``Path``.

    Raises:
        ArtifactError: ``path`` is one of ``inputs`` (the same file, by any name), or exists and
            was not named.

    Example:
        >>> p = Path(tempfile.mkdtemp()) / "r.html"; _ = p.write_text("old")
        >>> refuse_existing(p, named=False, fix="pass --force")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        tl_interp.errors.ArtifactError: '.../r.html' already exists and was not named as the output; ...
    """
    target = Path(path)
    for source in inputs:
        same = target.exists() and Path(source).exists() and os.path.samefile(target, source)
        if same or target.resolve() == Path(source).resolve():
            raise ArtifactError(f"the output {str(target)!r} is the input {str(source)!r}; writing it would destroy "
                                "the input: name another output file")
    if not named and target.exists():
        raise ArtifactError(f"{str(target)!r} already exists and was not named as the output; nothing was written. "
                            f"{fix}")
    return target


@contextlib.contextmanager
def atomic_file(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path that replaces ``final`` (fsynced) only if the body succeeds.

    The file gets ordinary permissions (``0666 & ~umask``), not mkstemp's private 0600.
    Temporaries of earlier writers of ``final`` that were killed are removed first.

    Example:
        >>> target = Path(tempfile.mkdtemp()) / "out.txt"
        >>> with atomic_file(target) as tmp:
        ...     _ = tmp.write_text("done")
        >>> target.read_text()
        'done'
    """
    target = check_target(final)
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{target.name}.tmp-"
    remove_stale(target.parent, prefix)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f"{prefix}{os.getpid()}-")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        # after the body: a writer may replace the file (safetensors writes its own 0600 temporary)
        os.chmod(tmp, 0o666 & ~_umask())
        _fsync(tmp)
        os.replace(tmp, target)
        _fsync(target.parent)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``final`` only if the body succeeds.

    Every file is fsynced before the rename. If another process published ``final`` first,
    the temporary copy is discarded and the existing entry is kept (entries under one key
    are interchangeable). Temporaries of killed earlier writers are removed first.

    Args:
        final: Where the finished directory should appear.

    Returns:
        A context manager yielding the temporary directory to fill.

    Example:
        >>> target = Path(tempfile.mkdtemp()) / "entry"
        >>> with atomic_dir(target) as tmp:
        ...     _ = (tmp / "x.txt").write_text("done")
        >>> (target / "x.txt").read_text()
        'done'
    """
    check_target(final, directory=True)
    final.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{final.name}.tmp-"
    remove_stale(final.parent, prefix)
    tmp = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=final.parent))
    try:
        yield tmp
        mode = 0o777 & ~_umask()
        for path in sorted(tmp.rglob("*"), reverse=True):  # files before their folders
            if path.is_dir():
                path.chmod(mode)
            else:
                path.chmod(mode & 0o666)
            _fsync(path)
        tmp.chmod(mode)  # mkdtemp makes it private; a published entry is an ordinary dir
        _fsync(tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():
                raise
        _fsync(final.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The hex SHA-256 of a file, read in 4 MiB blocks.

    Example:
        >>> p = Path(tempfile.mkdtemp()) / "f"
        >>> _ = p.write_bytes(b"abc")
        >>> sha256_file(p)[:16]
        'ba7816bf8f01cfea'
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _json_digest(doc: Mapping[str, Any]) -> str:
    body = {k: v for k, v in doc.items() if k != CHECKSUM_KEY}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def write_checked_json(path: str | os.PathLike[str], doc: Mapping[str, Any]) -> Path:
    """Write ``doc`` as indented JSON with an embedded ``"checksum"``, atomically.

    Returns:
        The path written.

    Example:
        >>> p = write_checked_json(Path(tempfile.mkdtemp()) / "card.json", {"a": 1})
        >>> read_checked_json(p, fix="rewrite it")
        {'a': 1}
    """
    body = {k: v for k, v in doc.items() if k != CHECKSUM_KEY}
    text = json.dumps({**body, CHECKSUM_KEY: _json_digest(body)}, indent=2) + "\n"
    target = Path(path)
    with atomic_file(target) as tmp:
        tmp.write_text(text)
    return target


def read_checked_json(path: str | os.PathLike[str], *, fix: str) -> dict[str, Any]:
    """Read a JSON document written by ``write_checked_json`` and verify its checksum.

    Args:
        path: The file.
        fix: What the user should do if it is missing or corrupt (ends the message).

    Returns:
        The document without its ``"checksum"`` entry.

    Raises:
        ArtifactError: the file is missing, empty, not JSON, has no checksum, or its content
            does not match the checksum.
    """
    file = Path(path)
    try:
        doc = json.loads(file.read_text())
    except FileNotFoundError as err:
        raise ArtifactError(f"{str(file)!r} is missing; {fix}") from err
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ArtifactError(f"{str(file)!r} is not readable JSON ({err}): truncated or corrupt; {fix}") from err
    if not isinstance(doc, dict) or not isinstance(doc.get(CHECKSUM_KEY), str):
        raise ArtifactError(f"{str(file)!r} has no {CHECKSUM_KEY!r} entry, so it was not written by tl_interp "
                            f"(or predates checksums); {fix}")
    if doc[CHECKSUM_KEY] != _json_digest(doc):
        raise ArtifactError(f"{str(file)!r} does not match its checksum: the file is corrupt; {fix}")
    return {k: v for k, v in doc.items() if k != CHECKSUM_KEY}


def manifest(root: str | os.PathLike[str], files: Iterable[str | os.PathLike[str]]) -> dict[str, dict[str, Any]]:
    """``{relative path: {"bytes", "sha256"}}`` of ``files`` under ``root`` (for a card or config).

    Example:
        >>> root = Path(tempfile.mkdtemp()); _ = (root / "w.bin").write_bytes(b"abc")
        >>> manifest(root, ["w.bin"])["w.bin"]["bytes"]
        3
    """
    base = Path(root)
    out = {}
    for name in sorted(Path(f).as_posix() for f in files):
        path = base / name
        out[name] = {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
    return out


def verify_manifest(root: str | os.PathLike[str], files: Mapping[str, Mapping[str, Any]], *, fix: str) -> None:
    """Check every file of a manifest (size first, then SHA-256); raise on the first mismatch.

    Args:
        root: The directory the manifest's paths are relative to.
        files: A ``manifest(...)`` as stored in a card or config.
        fix: What the user should do (ends the message).

    Raises:
        ArtifactError: a file is missing, has another size, or another checksum.

    Example:
        >>> root = Path(tempfile.mkdtemp()); _ = (root / "w.bin").write_bytes(b"abc")
        >>> files = manifest(root, ["w.bin"]); _ = (root / "w.bin").write_bytes(b"abd")
        >>> verify_manifest(root, files, fix="retrain it")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        tl_interp.errors.ArtifactError: '.../w.bin' does not match its recorded SHA-256 ...
    """
    if not files:
        raise ArtifactError(f"no file list (manifest) recorded for {str(root)!r}; {fix}")
    base = Path(root)
    for name, info in files.items():
        path = base / name
        if not path.is_file():
            raise ArtifactError(f"{str(path)!r} is missing; {fix}")
        size = path.stat().st_size
        if size != info["bytes"]:
            raise ArtifactError(f"{str(path)!r} has {size} bytes, {info['bytes']} were recorded "
                                f"(truncated or replaced); {fix}")
        if sha256_file(path) != info["sha256"]:
            raise ArtifactError(f"{str(path)!r} does not match its recorded SHA-256 (corrupt); {fix}")


def _tensor_digest(tensors: Mapping[str, Tensor], metadata: Mapping[str, str]) -> str:
    digest = hashlib.sha256(json.dumps(dict(sorted(metadata.items())), separators=(",", ":")).encode())
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        digest.update(json.dumps([name, str(t.dtype), list(t.shape)]).encode())
        digest.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return digest.hexdigest()


def save_checked(path: str | os.PathLike[str], tensors: Mapping[str, Tensor], metadata: Mapping[str, str]) -> Path:
    """Write tensors and string metadata to one safetensors file whose header holds their checksum.

    Example:
        >>> import torch
        >>> p = save_checked(Path(tempfile.mkdtemp()) / "x.safetensors", {"v": torch.ones(2)}, {"kind": "demo"})
        >>> load_checked(p, fix="save it again")[1]
        {'kind': 'demo'}
    """
    from safetensors.torch import save_file

    ready = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    meta = {**metadata, _HEADER_KEY: _tensor_digest(ready, metadata)}
    target = Path(path)
    with atomic_file(target) as tmp:
        save_file(ready, str(tmp), metadata=meta)
    return target


def load_checked(path: str | os.PathLike[str], *, fix: str) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Read a file written by ``save_checked`` and verify its checksum.

    Args:
        path: The safetensors file.
        fix: What the user should do if it is missing or corrupt (ends the message).

    Returns:
        ``(tensors, metadata)``, the metadata without the checksum entry.

    Raises:
        ArtifactError: missing, empty, truncated or foreign file, or a checksum mismatch.
    """
    from safetensors import SafetensorError, safe_open

    file = Path(path)
    if not file.is_file():
        raise ArtifactError(f"{str(file)!r} is missing; {fix}")
    try:
        with safe_open(str(file), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise ArtifactError(f"{str(file)!r} is not a readable safetensors file ({err}): empty, truncated "
                            f"or of another kind; {fix}") from err
    recorded = metadata.pop(_HEADER_KEY, None)
    if recorded is None:
        raise ArtifactError(f"{str(file)!r} carries no tl_interp checksum, so tl_interp did not write it; {fix}")
    if recorded != _tensor_digest(tensors, metadata):
        raise ArtifactError(f"{str(file)!r} does not match its checksum: the file is corrupt; {fix}")
    return tensors, metadata
