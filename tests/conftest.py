"""Session-wide test setup.

* ``STIR_CACHE`` points at a fresh temporary folder for the whole session, so no test
  reads or writes the user's model cache (subprocesses inherit it).
* ``STIR_PROGRESS=0``: no progress bars in test logs.
* One torch thread: the machine is small and shared, and tiny models gain nothing from more.

MNIST comes from ``stir_lib.data.mnist`` with the default data folder (``$STIR_DATA`` if the
environment sets it); it is memoised per folder, so the session loads it once.
"""

from __future__ import annotations


import os

import pytest
import torch

torch.set_num_threads(1)

# The longest files first, in this order (make test: two workers, --dist loadfile, no
# reordering by test count): each worker takes two files at the start, so the smoke
# notebooks (about 5.5 minutes) go to one worker with a short file and the paper-scale runs
# to the other, which then takes every other file while the notebooks run (longest job
# first). By test count, xdist's default, the notebooks' 10 tests can start last, leaving one
# worker idle at the end. Measured 2026-12-07 on this 2-core machine, whose speed drifted
# between runs: 350-434 s in five runs this way, 403-518 s in three runs the default way.
SCHEDULE_FIRST = ("test_notebooks.py", "test_paper_scale.py", "test_layout.py")


def pytest_collection_modifyitems(config, items):
    def rank(item):
        name = item.path.name
        return SCHEDULE_FIRST.index(name) if name in SCHEDULE_FIRST else len(SCHEDULE_FIRST)
    items.sort(key=rank)             # stable: every file keeps its own order


@pytest.fixture(scope="session", autouse=True)
def _isolated_environment(tmp_path_factory):
    cache = tmp_path_factory.mktemp("stir_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STIR_CACHE", str(cache))
        mp.setenv("STIR_PROGRESS", "0")
        yield cache


@pytest.fixture(scope="session")
def mnist_train():
    """The 60,000 MNIST training images (N, 1, 28, 28) in [0, 1] and int64 labels."""
    from stir_lib.data import mnist

    return mnist("train")


@pytest.fixture(scope="session")
def mnist_test():
    """The 10,000 MNIST test images and labels."""
    from stir_lib.data import mnist

    return mnist("test")


@pytest.fixture(scope="session")
def tiny_mnist(mnist_train):
    """200 training images, stratified and seeded: a small separable problem."""
    from stir_lib.data import subset

    x, y = subset(*mnist_train, 200, seed=0)
    return x.contiguous(), y.contiguous()


@pytest.fixture(scope="session")
def tiny_fc10(tiny_mnist):
    """FC10 (softmax regression) trained for a few epochs on ``tiny_mnist``, in eval mode."""
    from stir_lib.models import create_model
    from stir_lib.training import TrainConfig, train

    torch.manual_seed(0)
    model = create_model("fc10")
    history = train(model, *tiny_mnist, TrainConfig(epochs=5, batch_size=20, lr=1e-2))
    return model, history


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """An empty cache folder for one test (counts of create() calls must not depend on
    what other tests cached)."""
    root = tmp_path / "cache"
    monkeypatch.setenv("STIR_CACHE", str(root))
    return root


@pytest.fixture
def two_threads():
    """torch at 2 threads for the test (this session runs at 1), restored after, and the
    library's thread management back to its default (a test may switch it off)."""
    from stir_lib import threads

    if os.environ.get("MUTANT_UNDER_TEST"):
        # mutmut runs each mutant in a process forked from one that has used torch's
        # OpenMP pool: a second thread there waits forever on the parent's pool (seen
        # in stir under test_stir_surface's thread tests). They test the thread policy,
        # not a number; tests/mutation/equivalent.toml explains the mutants they catch.
        pytest.skip("two threads in a process forked by mutmut deadlock (OpenMP)")
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)
    threads.manage(None)
