"""Tests for stir_lib.cache: create once, load after; never use a damaged or partial entry."""

from __future__ import annotations

import json
import math
import pickle
import warnings
from dataclasses import dataclass

import pytest
import torch

from stir_lib import cache
from stir_lib.cache import config_key, entry_path, get_or_create


class Counter:
    """A create() that counts its calls and returns a fresh payload each time."""

    def __init__(self, payload=None):
        self.calls = 0
        self.payload = payload

    def __call__(self):
        self.calls += 1
        if self.payload is not None:
            return self.payload
        return {"w": torch.full((3, 4), float(self.calls)), "calls": self.calls}


CFG = {"model": "fc10", "lr": 1e-3, "epochs": 2, "widths": (100, 100)}


def entries(root, kind):
    """Every folder under the kind's folder, hidden (temporary) ones included."""
    folder = root / kind
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_create_once_then_load(fresh_cache):
    make = Counter()
    first = get_or_create("t", CFG, make)
    second = get_or_create("t", CFG, make)
    assert make.calls == 1
    assert torch.equal(first["w"], second["w"]) and second["calls"] == 1
    path = entry_path("t", CFG)
    assert path.parent.parent == fresh_cache and path.name == config_key("t", CFG)
    meta = json.loads((path / "meta.json").read_text())
    assert meta["kind"] == "t" and meta["config"]["widths"] == [100, 100]
    assert entries(fresh_cache, "t") == [path.name]


def test_payload_round_trips(fresh_cache):
    g = torch.Generator().manual_seed(0)
    payload = {"state": {"a.weight": torch.randn(5, 3, generator=g),
                         "b": torch.arange(7, dtype=torch.int64),
                         "half": torch.randn(2, generator=g).half()},
               "history": {"loss": [2.3, 1.1, 0.5], "seconds": 1.25},
               "name": "fc10", "n": 3, "flags": [True, False], "nothing": None}
    get_or_create("rt", {"x": 1}, Counter(payload))
    make = Counter()
    got = get_or_create("rt", {"x": 1}, make)
    assert make.calls == 0
    assert got.keys() == payload.keys()
    for k, v in payload["state"].items():
        assert got["state"][k].dtype == v.dtype and torch.equal(got["state"][k], v)
    assert {k: got[k] for k in ("history", "name", "n", "flags", "nothing")} == \
        {k: payload[k] for k in ("history", "name", "n", "flags", "nothing")}


def test_different_config_or_kind_gives_different_entry(fresh_cache):
    make = Counter()
    a = get_or_create("t", CFG, make)
    b = get_or_create("t", {**CFG, "lr": 2e-3}, make)
    c = get_or_create("u", CFG, make)
    assert make.calls == 3 and a["calls"] == 1 and b["calls"] == 2 and c["calls"] == 3
    assert len({entry_path("t", CFG), entry_path("t", {**CFG, "lr": 2e-3}),
                entry_path("u", CFG)}) == 3


def test_key_is_canonical():
    # dict order and tuple-vs-list do not matter; values and nesting do
    assert config_key("k", {"a": 1, "b": (2, 3)}) == config_key("k", {"b": [2, 3], "a": 1})
    assert config_key("k", {"a": 1}) != config_key("k", {"a": 1.5})
    assert config_key("k", {"a": {"b": 1}}) != config_key("k", {"a": {"b": 2}})
    assert config_key("k", {"x": math.nan}) == config_key("k", {"x": math.nan})

    @dataclass(frozen=True)
    class Cfg:
        lr: float = 0.1
        epochs: int = 2

    assert config_key("k", Cfg()) == config_key("k", {"epochs": 2, "lr": 0.1})
    assert config_key("k", Cfg()) != config_key("k", Cfg(lr=0.2))
    assert len(config_key("k", {})) == 24


@pytest.mark.parametrize("bad", [object(), {1, 2}, torch.zeros(2), {"a": [1, object()]}])
def test_non_json_config_is_a_type_error(fresh_cache, bad):
    make = Counter()
    with pytest.raises(TypeError, match="expected JSON-able values"):
        get_or_create("t", {"cfg": bad}, make)
    assert make.calls == 0 and entries(fresh_cache, "t") == []


def corrupt_flip(path):
    blob = bytearray((path / "payload.pt").read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (path / "payload.pt").write_bytes(bytes(blob))


def corrupt_truncate(path):
    blob = (path / "payload.pt").read_bytes()
    (path / "payload.pt").write_bytes(blob[: len(blob) // 2])


def corrupt_meta(path):
    (path / "meta.json").unlink()


def corrupt_payload_missing(path):
    (path / "payload.pt").unlink()


def corrupt_meta_garbage(path):
    (path / "meta.json").write_text("{not json")


@pytest.mark.parametrize("damage", [corrupt_flip, corrupt_truncate, corrupt_meta,
                                    corrupt_payload_missing, corrupt_meta_garbage])
def test_damaged_entry_is_detected_and_recomputed(fresh_cache, damage):
    make = Counter()
    get_or_create("t", CFG, make)
    path = entry_path("t", CFG)
    damage(path)
    with pytest.warns(UserWarning, match="corrupt or incomplete"):
        again = get_or_create("t", CFG, make)
    assert make.calls == 2 and again["calls"] == 2  # recomputed, not the damaged one
    # the new entry is whole: it loads silently and without another create()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        third = get_or_create("t", CFG, make)
    assert make.calls == 2 and torch.equal(third["w"], torch.full((3, 4), 2.0))
    assert entries(fresh_cache, "t") == [path.name]


def test_payload_swapped_between_entries_is_detected(fresh_cache):
    # a payload that is valid on its own but not the one the meta file vouches for
    get_or_create("t", {"a": 1}, Counter())
    make = Counter()
    get_or_create("t", {"a": 2}, Counter(payload={"w": torch.zeros(1), "calls": 99}))
    a, b = entry_path("t", {"a": 1}), entry_path("t", {"a": 2})
    (b / "payload.pt").write_bytes((a / "payload.pt").read_bytes())
    with pytest.warns(UserWarning, match="checksum mismatch"):
        got = get_or_create("t", {"a": 2}, make)
    assert make.calls == 1 and got["calls"] == 1


def test_failing_create_leaves_nothing(fresh_cache):
    def boom():
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        get_or_create("t", CFG, boom)
    assert not entry_path("t", CFG).exists() and entries(fresh_cache, "t") == []


def test_failing_write_leaves_no_entry_and_no_temp_folder(fresh_cache):
    get_or_create("t", {"other": 1}, Counter())  # the kind's folder exists already
    # torch.save cannot pickle a lambda: the write fails after the temp folder was made
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        get_or_create("t", CFG, lambda: {"f": lambda: 0})
    assert not entry_path("t", CFG).exists()
    assert entries(fresh_cache, "t") == [entry_path("t", {"other": 1}).name]
    make = Counter()
    get_or_create("t", CFG, make)  # and the next run computes and stores it
    assert make.calls == 1 and (entry_path("t", CFG) / "meta.json").exists()


def test_cache_root_honours_env(tmp_path, monkeypatch):
    monkeypatch.setenv("STIR_CACHE", str(tmp_path))
    assert cache.cache_root() == tmp_path
    assert entry_path("k", {}).parent == tmp_path / "k"


def test_code_version_tracks_source():
    def f():
        return 1

    def g():
        return 2

    assert cache.code_version(f) == cache.code_version(f)
    assert cache.code_version(f) != cache.code_version(g)
    assert cache.code_version(f, g) != cache.code_version(g, f)


def test_memoized_fingerprints_hash_once_and_see_inplace_changes(monkeypatch):
    """Inside the block the same tensors are hashed once; an in-place change (version
    counter), other tensors with equal content, and leaving the block all hash again,
    and the digest is the one the plain function gives."""
    from stir_lib import cache

    calls = []
    real = cache._hash
    monkeypatch.setattr(cache, "_hash", lambda ts: calls.append(1) or real(ts))
    x, y = torch.rand(50, 4, generator=torch.Generator().manual_seed(0)), torch.arange(50)
    plain = cache.fingerprint(x, y)
    with cache.memoized_fingerprints():
        assert cache.fingerprint(x, y) == plain
        with cache.memoized_fingerprints():           # nested: the same memo
            assert cache.fingerprint(x, y) == plain
        assert len(calls) == 2                       # the plain call + the first memoised one
        x2 = x.clone()
        assert cache.fingerprint(x2, y) == plain and len(calls) == 3   # other object: hashed
        x.mul_(2)                                    # in place: version counter bumped
        changed = cache.fingerprint(x, y)
        assert changed != plain and len(calls) == 4
        assert cache.fingerprint(x[:], y) == changed  # a view is another object: hashed anew
    assert cache._MEMO is None
    cache.fingerprint(x, y)
    assert len(calls) == 6                           # outside the block: no memo
