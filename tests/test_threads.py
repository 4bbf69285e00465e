"""The thread policy (stir_lib.threads): the override, the free-core meter on known
counter readings, restoring torch's setting, and every library loop running under it."""

from __future__ import annotations

import pytest
import torch

from stir_lib import threads
from stir_lib.attacks import lbfgs_min_distortion, pgd
from stir_lib.inversion import invert
from stir_lib.models import create_model
from stir_lib.training import TrainConfig, train


@pytest.mark.parametrize("value, expected", [("1", 1), ("3", 3), (" 2 ", 2)])
def test_override_fixes_every_kind(monkeypatch, value, expected):
    monkeypatch.setenv("STIR_THREADS", value)
    assert threads.threads_for("parallel") == expected
    assert threads.threads_for("serial") == expected


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_bad_override_says_what_was_expected(monkeypatch, value):
    monkeypatch.setenv("STIR_THREADS", value)
    with pytest.raises(ValueError, match="STIR_THREADS: expected a positive int or 'auto'"):
        threads.threads_for("parallel")


def test_unknown_kind_is_rejected():
    with pytest.raises(ValueError, match="kind"):
        threads.threads_for("fast")


def test_auto_serial_is_one_and_parallel_within_cores(monkeypatch):
    monkeypatch.setenv("STIR_THREADS", "auto")
    assert threads.threads_for("serial") == 1
    assert 1 <= threads.threads_for("parallel") <= threads._cores()


@pytest.mark.parametrize("busy, own, expected", [
    (200, 100, 1),   # another process uses one full core of two: one thread left
    (200, 200, 2),   # all the load is ours: both cores are ours
    (120, 100, 2),   # others use 0.2 of a core: below the threshold, still ours
    (100, 0, 1),     # others use one core while we sleep
    (200, 0, 1),     # others use both: never fewer than one thread
])
def test_meter_counts_only_other_processes(monkeypatch, busy, own, expected):
    hz = 100
    readings = iter([(0.0, 0.0, 0.0), (1.0, float(busy * hz // 100), float(own * hz // 100))])
    monkeypatch.setattr(threads, "_read", lambda: next(readings))
    monkeypatch.setattr(threads, "_cores", lambda: 2)
    monkeypatch.setattr(threads.os, "sysconf", lambda name: hz)
    monkeypatch.setattr(threads.time, "sleep", lambda s: None)
    assert threads._Meter().free() == expected


def test_meter_without_proc_uses_every_core(monkeypatch):
    monkeypatch.setattr(threads, "_read", lambda: None)
    monkeypatch.setattr(threads, "_cores", lambda: 4)
    assert threads._Meter().free() == 4


def test_use_restores_and_nests(monkeypatch, two_threads):
    monkeypatch.setenv("STIR_THREADS", "auto")
    with threads.use("serial") as n:
        assert n == 1 and torch.get_num_threads() == 1
        monkeypatch.setenv("STIR_THREADS", "3")
        with threads.use("parallel"):
            assert torch.get_num_threads() == 3
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    with pytest.raises(RuntimeError):
        with threads.use("serial"):
            raise RuntimeError("boom")
    assert torch.get_num_threads() == 2


def test_settings_report_the_policy(monkeypatch):
    monkeypatch.setenv("STIR_THREADS", "1")
    s = threads.settings()
    assert s["STIR_THREADS"] == "1" and s["serial"] == 1 and s["parallel (now)"] == 1
    assert s["cores"] >= 1


def _counts(model):
    """Record torch's thread count at every call of any of ``model``'s Linear layers."""
    seen = []
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            m.register_forward_pre_hook(lambda m, a: seen.append(torch.get_num_threads()))
    return seen


@pytest.mark.parametrize("case", ["ce", "autoencoder", "pgd-at", "trades", "mart",
                                  "lbfgs", "pgd", "inversion"])
def test_every_library_loop_runs_under_the_policy(monkeypatch, two_threads, case):
    """With STIR_THREADS=1 and torch at 2 threads, every forward pass of the library's
    loops runs on one thread (a loop outside the policy would show torch's 2): the
    autoencoder pre-training once ran outside it and took 2.7x its quiet time beside a
    busy process."""
    monkeypatch.setenv("STIR_THREADS", "1")
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(64, 1, 28, 28, generator=g), torch.randint(0, 10, (64,), generator=g)
    name = "ae400-10" if case == "autoencoder" else "fc100-100-10"
    torch.manual_seed(0)
    model = create_model(name)
    seen = _counts(model)
    if case in ("ce", "autoencoder", "pgd-at", "trades", "mart"):
        cfg = TrainConfig(epochs=1, batch_size=32, seed=0,
                          autoencoder_epochs=1 if case == "autoencoder" else 0,
                          loss="ce" if case in ("ce", "autoencoder") else case,
                          adv_eps=0.0 if case in ("ce", "autoencoder") else 1.0, adv_steps=2)
        train(model, x, y, cfg, progress=False)
    elif case == "lbfgs":
        lbfgs_min_distortion(model, x[:8], (y[:8] + 1) % 10, search_steps=2,
                             max_iter=5, progress=False)
    elif case == "pgd":
        pgd(model, x[:8], y[:8], eps=1.0, steps=2)
    else:
        invert(model, x[:8], steps=3, progress=False)
    assert seen, "the hook saw no forward pass"
    assert set(seen) == {1}, f"{case}: forward passes ran with {sorted(set(seen))} threads"
    assert torch.get_num_threads() == 2       # restored afterwards
