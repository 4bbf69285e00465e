"""The cache's bookkeeping: model identities, entry listing, temporaries, provenance, keys.

tests/test_cache.py checks that entries are created once, round-trip, and are detected and
redone when damaged; these tests cover what the runner and the jobs rely on besides: a
model's identity follows its weights, architecture and tag; `exists`, `load_entry` and
`entries` see exactly the complete entries; old temporaries of killed writers are removed
and young ones kept; the recorded provenance names the job; keys are canonical. Written
against the mutation report (tests/mutation/REPORT.md).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from stir_lib import cache


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("STIR_CACHE", str(tmp_path))
    return tmp_path


# ----------------------------------------------------------------------------- identity
def net(seed=0, width=3):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(2, width), nn.ReLU(), nn.Linear(width, 2))


def test_model_identity_follows_the_weights_and_the_architecture():
    a, b = net(0), net(0)
    ida = cache.model_identity(a)
    assert ida.startswith("weights:") and ida == cache.model_identity(b)
    assert len(ida.split(":")[1].split("-")) == 4             # weights, architecture, key names, code
    assert cache.model_identity(net(1)) != ida                  # other weights
    c = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 2))
    c.load_state_dict(a.state_dict())
    assert cache.model_identity(c) != ida                       # same weights, other function
    renamed = nn.Sequential()
    renamed.add_module("first", nn.Linear(2, 3))
    renamed.add_module("act", nn.ReLU())
    renamed.add_module("last", nn.Linear(3, 2))
    renamed.load_state_dict(dict(zip(["first.weight", "first.bias", "last.weight",
                                      "last.bias"], a.state_dict().values())))
    assert cache.model_identity(renamed).split("-")[0] == ida.split("-")[0]
    assert cache.model_identity(renamed) != ida                 # other key names


def test_a_tagged_model_is_known_by_its_key_until_its_weights_change():
    a = net()
    cache.tag_model(a, "abc123")
    assert cache.model_identity(a) == "model:abc123"
    assert a._stir_cache_tag == ("abc123", cache._weights_fingerprint(a))
    with torch.no_grad():
        a[0].bias += 1.0
    assert cache.model_identity(a).startswith("weights:")


# ----------------------------------------------------------------------------- entries
def test_exists_load_entry_and_entries_see_complete_entries(root, monkeypatch):
    monkeypatch.setenv("STIR_JOB_ID", "job-7")
    assert not cache.exists("k", {"a": 1}) and cache.entries() == []
    cache.get_or_create("k", {"a": 1}, lambda: {"v": torch.ones(2)}, device="cuda:3")
    time.sleep(1.1)                                             # "when" has 1 s resolution
    cache.get_or_create("other", {"a": 2}, lambda: 5)
    assert cache.exists("k", {"a": 1}) and not cache.exists("k", {"a": 2})
    key = cache.config_key("k", {"a": 1})
    torch.testing.assert_close(cache.load_entry("k", key)["v"], torch.ones(2))
    assert cache.load_entry("k", "0" * 24) is None
    listed = cache.entries()
    assert [e["kind"] for e in listed] == ["other", "k"]        # newest first
    first = listed[1]
    assert first["key"] == key and first["device"] == "cuda:3" and first["job"] == "job-7"
    assert first["pid"] == os.getpid() and first["seconds"] >= 0
    assert [e["kind"] for e in cache.entries("k")] == ["k"]
    # a hidden folder (a writer's temporary) and an unreadable meta are not entries
    hidden = root / "k" / ".tmp-writer"
    hidden.mkdir()
    (hidden / "meta.json").write_text("{}")
    (root / "k" / key / "meta.json").write_text("{not json")
    assert [e["kind"] for e in cache.entries()] == ["other"]
    # a folder without its payload does not exist
    (root / "other" / cache.config_key("other", {"a": 2}) / "payload.pt").unlink()
    assert not cache.exists("other", {"a": 2})


def test_meta_records_the_kind_config_checksum_and_time(root):
    cache.get_or_create("k", {"b": (1, 2)}, lambda: 3)
    meta = json.loads((cache.entry_path("k", {"b": (1, 2)}) / "meta.json").read_text())
    assert meta["kind"] == "k" and meta["config"] == {"b": [1, 2]}
    assert len(meta["sha256"]) == 64 and meta["computed"]["device"] == "cpu"
    assert set(meta["computed"]) == {"host", "device", "job", "pid", "when", "seconds"}


def test_a_finished_entry_removes_its_checkpoint(root):
    ck = cache.checkpoint_path("k", {"c": 1})
    assert ck.parent == cache.entry_path("k", {"c": 1}).parent
    assert ck.name == f".{cache.config_key('k', {'c': 1})}.checkpoint.pt"
    ck.parent.mkdir(parents=True)
    ck.write_bytes(b"partial")
    cache.get_or_create("k", {"c": 1}, lambda: 1)
    assert not ck.exists()


def test_old_temporaries_are_cleaned_and_young_ones_kept(root):
    (root / "k").mkdir()
    old, young, entry = root / "k" / ".old", root / "k" / ".young", root / "k" / "abc"
    for d in (old, young, entry):
        d.mkdir()
    hours = 3600
    os.utime(old, (time.time() - 30 * hours, time.time() - 30 * hours))
    os.utime(entry, (time.time() - 30 * hours, time.time() - 30 * hours))
    os.utime(young, (time.time() - 2 * hours, time.time() - 2 * hours))
    assert cache.clean_temporaries() == 1
    assert not old.exists() and young.exists() and entry.exists()
    assert cache.clean_temporaries(max_age_hours=1.0) == 1 and not young.exists()


def test_publish_refuses_to_overwrite(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    (a / "f").write_text("1")
    b.mkdir()
    (b / "g").write_text("2")
    assert cache._publish(a, b) is False and (b / "g").exists()
    c = tmp_path / "c"
    assert cache._publish(a, c) is True and (c / "f").exists()
    with pytest.raises(OSError):
        cache._publish(tmp_path / "missing", tmp_path / "d")


# ----------------------------------------------------------------------------- provenance
@pytest.mark.parametrize("env, job", [
    ({"SLURM_ARRAY_JOB_ID": "10", "SLURM_ARRAY_TASK_ID": "3", "SLURM_JOB_ID": "99"}, "10_3"),
    ({"SLURM_ARRAY_JOB_ID": "10"}, "10_"),
    ({"SLURM_JOB_ID": "99", "STIR_JOB_ID": "x"}, "99"),
    ({"STIR_JOB_ID": "x"}, "x"),
    ({}, None),
])
def test_provenance_names_the_job(monkeypatch, env, job):
    for k in ("SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_JOB_ID", "STIR_JOB_ID"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    p = cache.provenance(torch.device("cpu"))
    assert p["job"] == job and p["device"] == "cpu" and p["pid"] == os.getpid()
    assert p["host"] and time.strptime(p["when"][:19], "%Y-%m-%d %H:%M:%S")
    assert cache.provenance()["device"] == "cpu"
    assert cache.provenance("cuda:1")["device"] == "cuda:1"


# ----------------------------------------------------------------------------- keys
@dataclass
class Cfg:
    lr: float
    steps: tuple


def test_canonical_forms():
    assert cache._canonical(Cfg(0.1, (1, 2))) == {"lr": 0.1, "steps": [1, 2]}
    assert cache._canonical({2: "b", 1: ("a",)}) == {"1": ["a"], "2": "b"}
    assert list(cache._canonical({"b": 1, "a": 2})) == ["a", "b"]
    assert cache._canonical(float("nan")) == "nan"
    assert cache._canonical([True, None, 3, "s"]) == [True, None, 3, "s"]
    k = cache.config_key("kind", {"x": 1})
    assert len(k) == 24 and int(k, 16) >= 0
    assert k != cache.config_key("kind2", {"x": 1})
    assert cache.entry_path("kind", {"x": 1}) == cache.cache_root() / "kind" / k


def test_fingerprint_sees_shape_dtype_and_bytes():
    x = torch.arange(6.0)
    fp = cache.fingerprint(x)
    assert len(fp) == 16
    assert cache.fingerprint(x.view(2, 3)) != fp
    assert cache.fingerprint(x.double()) != fp
    assert cache.fingerprint(x + 1) != fp
    assert cache.fingerprint(x, x) != fp
    assert cache.fingerprint(torch.zeros(0)) != cache.fingerprint(torch.zeros(0, 2))


def test_cache_root_default_is_in_the_home_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("STIR_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache.cache_root() == Path(tmp_path) / ".cache" / "stir_lib"
    monkeypatch.setenv("STIR_CACHE", "~/elsewhere")
    assert cache.cache_root() == Path(tmp_path) / "elsewhere"


# ----------------------------------------------------------------------------- pinned formats
def test_key_formats_are_pinned():
    """Recorded once (2026-12-06): a change of the key format would silently orphan every
    reader's cache (or, worse, let two configurations share an entry)."""
    assert cache.config_key("kind", {"a": 1, "b": [1.5, "x"]}) == "3453a993169674113733ee36"
    assert cache.fingerprint(torch.arange(6.0)) == "d1fa5e76a3e55161"
    assert len(cache.code_version(cache)) == 16
    a = net()
    state = a.state_dict()
    assert cache._weights_fingerprint(a) == "-".join([
        cache.fingerprint(*state.values()), cache.config_key("arch", repr(a))[:8],
        cache.config_key("keys", list(state))[:8]])


def test_canonical_sorts_mixed_keys_by_their_text():
    assert list(cache._canonical({2: 1, "10": 2, "a": 3})) == ["10", "2", "a"]


# ----------------------------------------------------------------------------- loading
class Opaque:
    pass


def test_an_entry_that_needs_arbitrary_code_is_not_loaded(root):
    """Entries are read with weights_only=True: a payload that would run code on load (a
    pickled object of any class) counts as corrupt and is recomputed."""
    path = cache.entry_path("k", {"o": 1})
    path.mkdir(parents=True)
    torch.save({"obj": Opaque()}, path / "payload.pt")
    from stir_lib.paths import sha256_file
    (path / "meta.json").write_text(json.dumps({"sha256": sha256_file(path / "payload.pt")}))
    with pytest.warns(UserWarning, match="corrupt or incomplete"):
        assert cache.get_or_create("k", {"o": 1}, lambda: 7) == 7


def test_a_corrupt_entry_that_cannot_be_deleted_is_still_recomputed(root, monkeypatch):
    real = cache.shutil.rmtree

    def stubborn(path, ignore_errors=False):
        if not ignore_errors:
            raise PermissionError(path)
        return real(path, ignore_errors=True)
    monkeypatch.setattr(cache.shutil, "rmtree", stubborn)
    path = cache.entry_path("k", {"d": 1})
    path.mkdir(parents=True)
    (path / "meta.json").write_text("{}")
    with pytest.warns(UserWarning):
        assert cache.get_or_create("k", {"d": 1}, lambda: 3) == 3
    (root / "k" / ".old").mkdir()
    os.utime(root / "k" / ".old", (0, 0))
    assert cache.clean_temporaries() == 1


def test_load_entry_of_a_missing_key_is_quiet(root):
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cache.load_entry("k", "f" * 24) is None


# ----------------------------------------------------------------------------- writing
def test_time_and_temporary_of_a_new_entry(root, monkeypatch):
    published = []
    real = cache._publish

    def spy(tmp, path):
        published.append((tmp, path, sorted(p.name for p in tmp.iterdir())))
        return real(tmp, path)
    monkeypatch.setattr(cache, "_publish", spy)
    cache.get_or_create("k", {"t": 1}, lambda: time.sleep(0.05) or 1)
    tmp, path, files = published[0]
    assert tmp.parent == path.parent and tmp.name.startswith(f".{path.name}.")
    assert files == ["meta.json", "payload.pt"]
    seconds = json.loads((path / "meta.json").read_text())["computed"]["seconds"]
    assert isinstance(seconds, float) and 0.04 <= seconds <= 5 and seconds == round(seconds, 2)


@pytest.mark.parametrize("checkpointed", [True, False])
def test_a_writer_that_loses_the_race_returns_the_winners_entry(root, monkeypatch, checkpointed):
    """Two jobs compute one entry; the other publishes first (and removes the checkpoint it
    found), after which ours still wrote its last checkpoint: ours returns the winner's
    entry and leaves no checkpoint behind."""
    ck = cache.checkpoint_path("k", {"r": 1})

    def other_writer_first(tmp, path):
        monkeypatch.setattr(cache, "_publish", real)
        cache.get_or_create("k", {"r": 1}, lambda: "winner")   # publishes first
        if checkpointed:                                         # (a computation that has none)
            ck.write_bytes(b"our state after an epoch")        # written after the winner's end
        return False
    real = cache._publish
    monkeypatch.setattr(cache, "_publish", other_writer_first)
    assert cache.get_or_create("k", {"r": 1}, lambda: "loser") == "winner"
    assert not ck.exists()
    assert [p.name for p in (root / "k").iterdir()] == [cache.config_key("k", {"r": 1})]


@pytest.mark.filterwarnings("ignore:cache entry .* is corrupt or incomplete")
def test_publishing_gives_up_after_three_tries(root, monkeypatch):
    tries = []
    monkeypatch.setattr(cache, "_publish", lambda tmp, path: tries.append(1) or False)
    with pytest.raises(OSError, match="could not publish"):
        cache.get_or_create("k", {"p": 1}, lambda: 1)
    assert len(tries) == 3
    assert not any(p.name.startswith(".") for p in (root / "k").iterdir())   # no temporary


def test_publish_reports_a_lost_race_whatever_the_error(tmp_path):
    target = tmp_path / "b"
    target.mkdir()
    assert cache._publish(tmp_path / "missing", target) is False


def test_clean_temporaries_counts_and_uses_a_day_by_default(root):
    (root / "k").mkdir()
    now = time.time()
    for name, age in ((".a", 24 * 3600 + 12), (".b", 30 * 3600), (".c", 23.9 * 3600)):
        (root / "k" / name).mkdir()
        os.utime(root / "k" / name, (now - age, now - age))
    assert cache.clean_temporaries() == 2 and (root / "k" / ".c").exists()


def test_entries_without_kind_computed_or_time(root):
    for name, meta in (("aaa", {"computed": {"when": "2026-01-02"}}),
                       ("bbb", {"kind": "x"}),
                       ("ccc", {"kind": "y", "computed": {"when": "2026-01-01"}})):
        (root / "x" / name).mkdir(parents=True)
        (root / "x" / name / "meta.json").write_text(json.dumps(meta))
    listed = cache.entries()
    assert [e["key"] for e in listed] == ["aaa", "ccc", "bbb"]      # no time: last
    assert listed[0]["kind"] == "x" and listed[2] == {"kind": "x", "key": "bbb"}
    assert listed[1]["kind"] == "y"                               # the meta's kind first


def test_memo_keeps_every_set_of_tensors(monkeypatch):
    calls = []
    real = cache._hash
    monkeypatch.setattr(cache, "_hash", lambda ts: calls.append(1) or real(ts))
    a, b = torch.arange(3.0), torch.arange(4.0)
    with cache.memoized_fingerprints():
        fa, fb = cache.fingerprint(a), cache.fingerprint(b)
        assert cache.fingerprint(a) == fa and cache.fingerprint(b) == fb
        assert cache.fingerprint(a, b) != fa
    assert len(calls) == 3


# ----------------------------------------------------------------------------- code in identity
class _Twice(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, x):
        return 2 * self.lin(x)


class _Thrice(_Twice):                     # the same modules and weights, another forward
    def forward(self, x):
        return 3 * self.lin(x)


@pytest.fixture
def no_memo(monkeypatch):
    """An empty memo of forward digests (another test, or the process this one was forked
    from, may have filled it: the digests below must be computed here)."""
    import weakref
    monkeypatch.setattr(cache, "_SOURCES", weakref.WeakKeyDictionary())


def _sha(text: str) -> str:
    import hashlib
    return hashlib.sha256(text.encode()).hexdigest()


def test_the_identity_follows_the_code_of_forward(no_memo, monkeypatch):
    """Same weights and parameter names, another forward: another identity; the code part
    is 8 hex digits of a hash over every module class and its forward's source."""
    import inspect
    import types
    torch.manual_seed(0)
    a = _Twice()
    b = _Thrice()
    b.load_state_dict(a.state_dict())
    ida, idb = cache.model_identity(a), cache.model_identity(b)
    assert ida.startswith("weights:") and ida != idb
    code = ida.rsplit("-", 1)[1]
    assert len(code) == 8 and int(code, 16) >= 0
    assert cache.model_identity(_Twice().requires_grad_(False)) != ida      # other weights
    again = _Twice()
    again.load_state_dict(a.state_dict())
    assert cache.model_identity(again) == ida                                # same code, weights
    assert cache._forward_hash(_Twice.forward) == _sha(inspect.getsource(_Twice.forward))
    assert cache._forward_hash(a.forward) == cache._forward_hash(_Twice.forward)  # bound
    again.forward = types.MethodType(_Thrice.forward, again)                 # set on an instance
    assert cache.model_identity(again) != ida
    monkeypatch.setattr(_Twice, "forward", _Thrice.forward)                  # the class edited
    assert cache.model_identity(a) != ida


def test_a_forward_without_source_is_named_by_its_qualified_name(no_memo):
    ns: dict = {}
    exec("import torch\n"
         "class Gen(torch.nn.Module):\n"
         "    def forward(self, x):\n"
         "        return x\n", ns)
    fwd = ns["Gen"].forward
    want = _sha(f"{fwd.__module__}.{fwd.__qualname__}")
    assert cache._forward_hash(fwd) == want and cache._forward_hash(fwd) == want   # memo too
    assert cache._forward_hash(len) == _sha("builtins.len")                 # no source
    import operator
    getter = operator.itemgetter(0)        # no weak reference, no qualified name: its repr
    assert cache._forward_hash(getter) == _sha("operator.operator.itemgetter(0)")
    bound = (1).__add__                    # no weak reference, no module
    assert cache._forward_hash(bound) == _sha(".int.__add__")
    assert cache.model_identity(ns["Gen"]()) != cache.model_identity(nn.Identity())
