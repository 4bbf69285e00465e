"""A content-addressed cache for trained models and other expensive results.

An entry is keyed by everything that determines it: a kind ("model",
"attack", ...), a JSON-able configuration (architecture, hyper-parameters,
data, seed) and the source of the code that computes it. Change any of them and
the key changes, so a stale entry is never found.

Each entry is a folder ``<root>/<kind>/<key>/`` with ``payload.pt`` (loaded with
``torch.load(weights_only=True)``: no pickled code runs) and ``meta.json`` (the
configuration and the payload's SHA-256). Entries are written to a temporary
folder and renamed into place, so an interrupted run leaves no entry; an entry
whose payload is missing or whose checksum does not match is deleted and
recomputed, never used.

The root is ``$STIR_CACHE`` if set, else ``~/.cache/stir_lib``.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

__all__ = ["cache_root", "code_version", "config_key", "get_or_create", "entry_path"]


def cache_root() -> Path:
    """The cache folder: ``$STIR_CACHE``, else ``~/.cache/stir_lib``."""
    root = os.environ.get("STIR_CACHE") or Path.home() / ".cache" / "stir_lib"
    return Path(root).expanduser()


def code_version(*objects) -> str:
    """Short hash of the source of modules, classes or functions (the code's version)."""
    h = hashlib.sha256()
    for obj in objects:
        h.update(inspect.getsource(obj).encode())
    return h.hexdigest()[:16]


def _canonical(obj: Any):
    """JSON-able canonical form; tuples become lists, dataclasses become dicts."""
    if hasattr(obj, "__dataclass_fields__"):
        return {k: _canonical(getattr(obj, k)) for k in obj.__dataclass_fields__}
    if isinstance(obj, dict):
        return {str(k): _canonical(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if isinstance(obj, float) and obj != obj:  # NaN is not JSON
        return "nan"
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    raise TypeError(f"cache key: expected JSON-able values (numbers, strings, lists, dicts, "
                    f"dataclasses), got {type(obj).__name__}")


def config_key(kind: str, config: Any) -> str:
    """SHA-256 (first 24 hex digits) of the kind and the canonical configuration."""
    text = json.dumps({"kind": kind, "config": _canonical(config)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def entry_path(kind: str, config: Any) -> Path:
    """Folder of the entry for ``(kind, config)``, whether or not it exists."""
    return cache_root() / kind / config_key(kind, config)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _load(path: Path):
    """Load a verified entry, or return None (after deleting it) if it is corrupt."""
    meta_file, payload = path / "meta.json", path / "payload.pt"
    try:
        meta = json.loads(meta_file.read_text())
        if _sha256(payload) != meta["sha256"]:
            raise ValueError("checksum mismatch")
        return torch.load(payload, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure means: do not use it
        warnings.warn(f"cache entry {path} is corrupt or incomplete ({err}); recomputing it",
                      stacklevel=3)
        shutil.rmtree(path, ignore_errors=True)
        return None


def get_or_create(kind: str, config: Any, create: Callable[[], Any]):
    """Return the cached payload for ``(kind, config)``, creating it if needed.

    ``create()`` must return something ``torch.save`` can store and
    ``torch.load(weights_only=True)`` can read: tensors, numbers, strings and
    lists/dicts of them (a state dict, not a module).
    """
    path = entry_path(kind, config)
    if path.exists():
        value = _load(path)
        if value is not None:
            return value
    value = create()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        torch.save(value, tmp / "payload.pt")
        meta = {"kind": kind, "config": _canonical(config), "sha256": _sha256(tmp / "payload.pt")}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        if path.exists():  # a concurrent run finished first; keep one
            shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return value
