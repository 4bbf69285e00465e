"""The step study of stir_pairs: the step scaled to the images' norm, and its inversion jobs
(the matrix's, with only the step changed)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from stir_lib.chapters import stir as C
from stir_lib.jobs import Data
from stir_lib.models import CIFAR_MEAN, CIFAR_STD


def test_cifar_rms_norm_is_the_norm_of_images_with_the_published_statistics():
    # independent answer: draw images whose channels have CIFAR-10's means and stds
    g = torch.Generator().manual_seed(0)
    mean = torch.tensor(CIFAR_MEAN)[:, None, None]
    std = torch.tensor(CIFAR_STD)[:, None, None]
    x = mean + std * torch.randn(4000, 3, 32, 32, generator=g)
    rms = float(x.flatten(1).pow(2).sum(1).mean().sqrt())
    assert C.CIFAR10_RMS_NORM == pytest.approx(rms, rel=2e-3)
    assert 29 < C.CIFAR10_RMS_NORM < 30.5


def test_scaled_step_is_half_times_the_rms_norm_ratio(monkeypatch):
    # a constant image of value v has norm v * sqrt(d): the step is 0.5 * v * 28 / 29.7
    for v in (0.25, 1.0):
        x = torch.full((5, 1, 28, 28), v)
        monkeypatch.setattr(Data, "load", lambda self, x=x: (x, torch.zeros(5, dtype=torch.long)))
        step = C.scaled_step(C.settings("smoke"))
        assert step == pytest.approx(0.5 * v * 28 / C.CIFAR10_RMS_NORM, abs=1e-4)
    # a CIFAR-sized image at the CIFAR RMS norm gets the paper's step back
    x = torch.full((2, 3, 32, 32), C.CIFAR10_RMS_NORM / (3 * 32 * 32) ** 0.5)
    monkeypatch.setattr(Data, "load", lambda self: (x, torch.zeros(2, dtype=torch.long)))
    assert C.scaled_step(C.settings("smoke")) == pytest.approx(0.5, abs=1e-4)


@pytest.mark.parametrize("scale", ["smoke", "ci"])
def test_step_jobs_are_the_mlp_matrix_jobs_with_only_the_step_changed(scale):
    S = C.settings(scale)
    models = C.zoo(S)
    step = C.scaled_step(S)
    assert 0.1 < step < 0.25                      # MNIST: about a third of the paper's step
    jobs = C.step_jobs(S, models)
    mlps = {n for n in models if C.parse(n)[1] == "mlp"}
    assert {n for n, m in models.items() for j in jobs if j.model is m} == mlps
    matrix = {j.model.key(): j for j in C.matrix_jobs(S, models)}
    for j in jobs:
        base = matrix[j.model.key()]
        assert j.step_size == step and base.step_size is None
        assert dataclasses.replace(j, step_size=None) == base
        assert j.key() != base.key()
    # the plan lists them (so warm and the cluster compute them) and nothing else changes
    plan = C.plan(scale, notebooks=("stir_pairs",))
    assert all(j in plan for j in jobs)


def test_no_step_study_where_it_is_off_or_its_family_is_absent():
    S = C.settings("smoke", step_archs=())
    assert C.step_jobs(S, C.zoo(S)) == []
    S = C.settings("smoke", archs=["conv", "res"], losses_arch="conv")
    assert C.step_jobs(S, C.zoo(S)) == []
    assert C.settings("paper")["step_archs"] == ()
