"""What every data loader shares: the data folder, IDX files, a numpy-only unpickler, and the
"first source that works" loop that MNIST and Fashion-MNIST are read through."""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
from pathlib import Path

import numpy as np
import torch

from ..validation import check_choice


__all__ = ["data_root"]


def data_root() -> Path:
    """The data folder: ``$STIR_DATA``, else ``~/.cache/stir_lib/data``."""
    root = os.environ.get("STIR_DATA") or Path.home() / ".cache" / "stir_lib" / "data"
    return Path(root).expanduser()


def _digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a, dtype=np.uint8).tobytes()).hexdigest()


def _read_idx(path: Path) -> np.ndarray:
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">i4", count=ndim, offset=4)
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _idx_folder(folder: Path) -> dict:
    """{"train": (images, labels), "test": ...} from the four IDX files (.gz or not)."""
    out = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        arrays = []
        for kind in ("images-idx3", "labels-idx1"):
            stem = folder / f"{prefix}-{kind}-ubyte"
            path = stem if stem.exists() else stem.with_name(stem.name + ".gz")
            if not path.exists():
                raise FileNotFoundError(f"no {stem}[.gz]")
            arrays.append(_read_idx(path))
        out[split] = tuple(arrays)
    return out


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else: no other callable can run."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data pickle "
                                         f"(only numpy arrays are allowed)")
        if module.startswith("numpy.core.") and int(np.__version__.split(".")[0]) >= 2:
            module = module.replace("numpy.core", "numpy._core")
        return super().find_class(module, name)


def _sha256_bytes(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _read_npz(path: Path):
    with np.load(path, allow_pickle=False) as z:
        return {s: (z[f"{s}_x"], z[f"{s}_y"]) for s in ("train", "test")}


def _first_source(what: str, own: Path, sources: list, verify, unavailable: type, fix: str) -> dict:
    """The uint8 arrays {"train": (x, y), "test": (x, y)} from the first of ``sources``
    ((name, load) pairs; the library's verified copy ``own`` among them) whose content
    passes ``verify(split, x, y, source)``; a source other than the verified copy is saved
    as that copy (written under a temporary name, then renamed). When none works, raises
    ``unavailable`` listing every source tried and its error, then ``fix``."""
    tried = []
    for name, load in sources:
        try:
            got = load()
            for split in ("train", "test"):
                verify(split, *got[split], source=name)
        except Exception as err:  # noqa: BLE001 - try the next source, report all
            tried.append(f"  - {name}: {type(err).__name__}: {err}")
            continue
        if not name.startswith("verified copy"):
            own.parent.mkdir(parents=True, exist_ok=True)
            tmp = own.with_suffix(".tmp.npz")
            np.savez(tmp, **{f"{s}_{k}": got[s][i] for s in got for i, k in enumerate("xy")})
            os.replace(tmp, own)
        return got
    raise unavailable(f"could not load {what} from any source:\n" + "\n".join(tried) + "\n" + fix)


def _as_tensors(x: np.ndarray, y: np.ndarray):
    """uint8 (N, H, W) images and labels -> float32 (N, 1, H, W) in [0, 1] (byte / 255) and
    int64 labels."""
    images = torch.from_numpy(x.astype(np.float32) / np.float32(255.0)).unsqueeze(1)
    return images, torch.from_numpy(y.astype(np.int64))


def _split(memo: dict, load, split: str, root) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, labels) of ``split`` ("train" or "test") from ``load(folder)``'s uint8 arrays,
    loaded once per data folder (``memo``: folder -> arrays; a failed load is not kept)."""
    check_choice(split, "split", ("train", "test"))
    root = Path(root).expanduser() if root is not None else data_root()
    key = str(root.resolve())
    if key not in memo:
        memo[key] = load(root)
    return _as_tensors(*memo[key][split])
