"""A content-addressed cache for trained models and other expensive results.

An entry is keyed by everything that determines it: a kind ("model",
"attack", ...), a JSON-able configuration (architecture, hyper-parameters,
data, seed) and the source of the code that computes it. Change any of them and
the key changes, so a stale entry is never found.

Each entry is a folder ``<root>/<kind>/<key>/`` with ``payload.pt`` (loaded with
``torch.load(weights_only=True)``: no pickled code runs) and ``meta.json`` (the
configuration, the payload's SHA-256 and where and when it was computed: host, device,
job id, seconds). An entry whose payload is missing or whose checksum does not match
is deleted and recomputed, never used.

Concurrent writers (several jobs of a cluster on one network filesystem) are safe
without locks: an entry is written once, completely, into a temporary folder beside
it (``.<key>.<host>.<pid>.<random>``) and published by one ``rename``, which either
succeeds or finds that another job published the entry first; then the loser deletes
its copy and returns the winner's payload. A job killed mid-write leaves only a
temporary folder, which no reader opens (:func:`clean_temporaries` removes old ones).
Long computations (training) checkpoint to ``checkpoint_path(kind, config)`` so that a
re-run resumes where the killed one stopped.

The root is ``$STIR_CACHE`` if set, else ``~/.cache/stir_lib``.
"""

from __future__ import annotations

import errno
import hashlib
import inspect
import json
import os
import shutil
import socket
import tempfile
import time
import warnings
import weakref
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from .paths import sha256_file

__all__ = ["cache_root", "code_version", "config_key", "get_or_create", "entry_path", "exists",
           "checkpoint_path", "provenance", "entries", "clean_temporaries", "fingerprint",
           "memoized_fingerprints",
           "load_entry", "tag_model", "model_identity"]


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


_MEMO: dict | None = None     # fingerprints remembered inside memoized_fingerprints()


@contextmanager
def memoized_fingerprints():
    """Within the block, :func:`fingerprint` hashes each tuple of tensors once.

    Listing a plan computes the key of every job, and each key hashes its data (60,000
    MNIST images are 188 MB): without the memo ``plan --scale ci transfer`` hashed the
    same tensors 294 times. A remembered fingerprint is used only for the very same
    tensor objects (checked through weak references) at the same version counter, which
    torch bumps on every in-place change; use the block where the data are not written
    through other aliases (a NumPy view), as the planning and warming loops do not.
    Nested blocks share the outer memo; it is dropped when the outermost block ends.
    """
    global _MEMO
    outer = _MEMO is not None
    if not outer:
        _MEMO = {}
    try:
        yield
    finally:
        if not outer:
            _MEMO = None


def _hash(tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().contiguous().cpu()
        h.update(f"{tuple(t.shape)}{t.dtype}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy())   # the buffer, not a copy
    return h.hexdigest()[:16]


def fingerprint(*tensors: torch.Tensor) -> str:
    """SHA-256 (first 16 hex digits) of the tensors' shapes, dtypes and bytes (any device).

    Inside :func:`memoized_fingerprints` the same tensors are hashed once."""
    memo = _MEMO
    if memo is None:
        return _hash(tensors)
    key = tuple((id(t), t._version) for t in tensors)
    hit = memo.get(key)
    if hit is not None and all(r() is t for r, t in zip(hit[0], tensors)):
        return hit[1]
    digest = _hash(tensors)
    memo[key] = (tuple(weakref.ref(t) for t in tensors), digest)
    return digest


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


def _load(path: Path):
    """Load a verified entry, or return None (after deleting it) if it is corrupt."""
    meta_file, payload = path / "meta.json", path / "payload.pt"
    try:
        meta = json.loads(meta_file.read_text())
        if sha256_file(payload) != meta["sha256"]:
            raise ValueError("checksum mismatch")
        return torch.load(payload, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure means: do not use it
        warnings.warn(f"cache entry {path} is corrupt or incomplete ({err}); recomputing it",
                      stacklevel=3)
        shutil.rmtree(path, ignore_errors=True)
        return None


def exists(kind: str, config: Any) -> bool:
    """True if a complete entry for ``(kind, config)`` is present (meta and payload files).

    Cheap: the checksum is verified when the entry is loaded, not here.
    """
    path = entry_path(kind, config)
    return (path / "meta.json").is_file() and (path / "payload.pt").is_file()


def checkpoint_path(kind: str, config: Any) -> Path:
    """File where a long computation of ``(kind, config)`` keeps its resumable state."""
    path = entry_path(kind, config)
    return path.parent / f".{path.name}.checkpoint.pt"


def provenance(device: Any = None) -> dict:
    """Where and when this process computes: host, device, job id (SLURM / submitit), pid."""
    job = os.environ.get("SLURM_ARRAY_JOB_ID")
    if job:
        job = f"{job}_{os.environ.get('SLURM_ARRAY_TASK_ID', '')}"
    else:
        job = os.environ.get("SLURM_JOB_ID") or os.environ.get("STIR_JOB_ID")
    return {"host": socket.gethostname(), "device": str(device) if device is not None else "cpu",
            "job": job, "pid": os.getpid(), "when": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def _publish(tmp: Path, path: Path) -> bool:
    """Rename ``tmp`` to ``path``; False if another writer published ``path`` first."""
    try:
        os.rename(tmp, path)
        return True
    except OSError as err:
        if err.errno in (errno.ENOTEMPTY, errno.EEXIST) or path.exists():
            return False
        raise


def get_or_create(kind: str, config: Any, create: Callable[[], Any], *,
                  device: Any = None):
    """Return the cached payload for ``(kind, config)``, creating it if needed.

    ``create()`` must return something ``torch.save`` can store and
    ``torch.load(weights_only=True)`` can read: tensors, numbers, strings and
    lists/dicts of them (a state dict, not a module). ``device`` is recorded in the
    entry's provenance (it is not part of the key).
    """
    path = entry_path(kind, config)
    if path.exists():
        value = _load(path)
        if value is not None:
            return value
    t0 = time.perf_counter()
    value = create()
    seconds = time.perf_counter() - t0
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{socket.gethostname()}.{os.getpid()}.",
                                dir=path.parent))
    try:
        torch.save(value, tmp / "payload.pt")
        meta = {"kind": kind, "config": _canonical(config), "sha256": sha256_file(tmp / "payload.pt"),
                "computed": {**provenance(device), "seconds": round(seconds, 2)}}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        for _ in range(3):
            if _publish(tmp, path):
                break
            winner = _load(path)     # another job finished first: use its entry
            if winner is not None:
                checkpoint_path(kind, config).unlink(missing_ok=True)   # ours, if we wrote one
                return winner
        else:
            raise OSError(f"cache: could not publish {path} (a corrupt entry keeps reappearing)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    checkpoint_path(kind, config).unlink(missing_ok=True)
    return value


def entries(kind: str | None = None) -> list[dict]:
    """Every complete entry's kind, key and provenance (from meta.json), newest first."""
    root = cache_root()
    out = []
    for meta_file in root.glob(f"{kind or '*'}/*/meta.json"):
        if meta_file.parent.name.startswith("."):
            continue
        try:
            meta = json.loads(meta_file.read_text())
        except (OSError, ValueError):
            continue
        out.append({"kind": meta.get("kind", meta_file.parent.parent.name),
                    "key": meta_file.parent.name, **meta.get("computed", {})})
    return sorted(out, key=lambda e: str(e.get("when", "")), reverse=True)


def clean_temporaries(max_age_hours: float = 24.0) -> int:
    """Delete temporary folders of killed writers older than ``max_age_hours``; count them."""
    root, now, n = cache_root(), time.time(), 0
    for tmp in root.glob("*/.*"):
        if tmp.is_dir() and now - tmp.stat().st_mtime > 3600 * max_age_hours:
            shutil.rmtree(tmp, ignore_errors=True)
            n += 1
    return n


def load_entry(kind: str, key: str):
    """The payload of the entry with digest ``key`` (as :func:`config_key` returns), or None."""
    path = cache_root() / kind / key
    return _load(path) if path.exists() else None


def _weights_fingerprint(model: torch.nn.Module) -> str:
    state = model.state_dict()
    return (fingerprint(*state.values()) + "-" + config_key("arch", repr(model))[:8]
            + "-" + config_key("keys", list(state))[:8])


def tag_model(model: torch.nn.Module, key: str) -> None:
    """Mark ``model`` as the cached model ``key`` (with its weights' fingerprint)."""
    model._stir_cache_tag = (key, _weights_fingerprint(model))


_SOURCES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()   # forward -> its hash


def _forward_hash(forward) -> str:
    """Hash of a ``forward`` function's source, or of its qualified name without a source."""
    fn = getattr(forward, "__func__", forward)
    try:
        hit = _SOURCES.get(fn)
    except TypeError:                        # not weak-referenceable: no memo
        hit = None
    if hit is not None:
        return hit
    try:
        text = inspect.getsource(fn)
    except (OSError, TypeError):             # built in, or defined where no file is kept
        text = f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', repr(fn))}"
    digest = hashlib.sha256(text.encode()).hexdigest()
    try:
        _SOURCES[fn] = digest
    except TypeError:
        pass
    return digest


def _code_fingerprint(model: torch.nn.Module) -> str:
    """Hash of the code every module of ``model`` runs: for each distinct module class, its
    qualified name and the source of its ``forward`` (a ``forward`` set on an instance
    counts too). Functions that ``forward`` calls are not followed."""
    parts = set()
    for m in model.modules():
        cls = type(m)
        forward = m.__dict__.get("forward", cls.forward)
        parts.add(f"{cls.__module__}.{cls.__qualname__}:{_forward_hash(forward)}")
    return config_key("code", sorted(parts))[:8]


def model_identity(model: torch.nn.Module) -> str:
    """A string that determines the model's function, for keys of results computed from it.

    ``"model:<key>"`` for a model loaded by :func:`stir_lib.training.trained_model` whose
    weights are still those it was loaded with (checked by their fingerprint), so that
    a job planned before the model existed has the same key (that key covers the
    models' source); else ``"weights:<fingerprint of weights, architecture and key
    names>-<code>"``, where the code part hashes the source of ``forward`` of every
    distinct module class in the model (:func:`_code_fingerprint`), so that an edited
    ``forward`` with the same weights gives a new key.
    """
    tag = getattr(model, "_stir_cache_tag", None)
    weights = _weights_fingerprint(model)
    if tag is not None and tag[1] == weights:
        return f"model:{tag[0]}"
    return f"weights:{weights}-{_code_fingerprint(model)}"
