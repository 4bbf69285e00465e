"""stir_lib: the library behind the book, in floors (each imports only from below).

Plumbing: validation, progress, paths (the book's root and table of contents), threads,
scales, cache. Things: models, data (a registry of data sets), verdicts (the statistics
and generic rules behind every verdict). Measures and procedures: features (named layers
of any model), attacks, similarity (CKA), spectral (operator norms), training, inversion,
stir, transfer, checkpoints. Experiments: jobs (plans of cache entries), results
(scorecards), plotting, cluster (plans through submitit). The chapters: ``chapters``, one
module per chapter with its presets, helpers, plan, the paper's numbers and its claim rules.
The book's tooling sits on top in ``stir_lib.book`` (the runner, the site check, MathJax,
the PDF) and nothing in the library imports it.

The entry points people call are exported here and imported on first use, so that
``import stir_lib`` imports neither torch nor anything optional::

    import stir_lib
    r = stir_lib.stir(model_a, model_b, X)        # STIR both ways and CKA
    stir_lib.linear_cka(feats_a, feats_b)

``stir_lib.stir`` is both the module :mod:`stir_lib.stir` and, called, its function
:func:`stir_lib.stir.stir`: ``stir_lib.stir(...)``, ``from stir_lib import stir; stir(...)``
and ``stir_lib.stir.stir_matrix(...)`` all work, whatever was imported first.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING

__version__ = "0.1.0"

__all__ = [
    "stir", "stir_matrix", "STIRResult", "Score",                      # STIR
    "invert", "representation", "InversionResult",                     # inversion
    "Layer", "layer_names", "default_layer",                           # layers of any model
    "stir_baselines", "Baselines",                                     # STIR's controls
    "linear_cka", "debiased_cka", "rbf_cka", "hsic_unbiased",          # CKA
    "MinibatchCKA", "LinearCKASums", "minibatch_cka",                  # CKA over batches
    "pgd", "lbfgs_min_distortion", "LBFGSResult",                      # attacks
    "create_model", "list_models", "ImageModel",                       # models
]
# the module that defines each export
_EXPORTS = {name: module for module, names in {
    "stir": ("stir", "stir_matrix", "STIRResult", "Score"),
    "inversion": ("invert", "representation", "InversionResult"),
    "features": ("Layer", "layer_names", "default_layer"),
    "baselines": ("stir_baselines", "Baselines"),
    "similarity": ("linear_cka", "debiased_cka", "rbf_cka", "hsic_unbiased"),
    "batch_cka": ("MinibatchCKA", "LinearCKASums", "minibatch_cka"),
    "attacks": ("pgd", "lbfgs_min_distortion", "LBFGSResult"),
    "models": ("create_model", "list_models", "ImageModel"),
}.items() for name in names}

if TYPE_CHECKING:   # for editors and type checkers; at run time __getattr__ imports them
    from .attacks import LBFGSResult, lbfgs_min_distortion, pgd
    from .batch_cka import LinearCKASums, MinibatchCKA, minibatch_cka
    from .features import Layer, default_layer, layer_names
    from .inversion import InversionResult, invert, representation
    from .models import ImageModel, create_model, list_models
    from .similarity import debiased_cka, hsic_unbiased, linear_cka, rbf_cka
    from .stir import Score, STIRResult, stir, stir_matrix
    from .baselines import Baselines, stir_baselines


class _CallableModule(types.ModuleType):
    """The class of the module :mod:`stir_lib.stir`: calling it calls its ``stir``."""

    def __call__(self, *args, **kwargs):
        return self.stir(*args, **kwargs)

    @property
    def __signature__(self):
        import inspect
        return inspect.signature(self.stir)


def _callable(module: types.ModuleType) -> types.ModuleType:
    if type(module) is types.ModuleType:
        module.__class__ = _CallableModule
    return module


class _Package(types.ModuleType):
    """The class of this package. Importing the submodule stir_lib.stir binds the package's
    attribute ``stir`` to it (the import system does); this makes that module callable, so
    that the name means the function ``stir`` too, whoever imported the module first."""

    def __setattr__(self, name, value):
        if name == "stir" and isinstance(value, types.ModuleType):
            _callable(value)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}; expected one of "
                             f"its exports {sorted(__all__)}, or import a submodule first "
                             f"(import stir_lib.<module>)")
    module = importlib.import_module(f".{_EXPORTS[name]}", __name__)
    if name == "stir":
        return _callable(module)
    value = getattr(module, name)
    globals()[name] = value        # later look-ups find it without __getattr__
    return value


def __dir__() -> list[str]:
    """The exports, the dunder names and the submodules imported so far."""
    here = globals()
    modules = {n for n, v in here.items() if isinstance(v, types.ModuleType)
               and v.__name__.startswith(f"{__name__}.")}
    return sorted({*__all__, *modules, *(n for n in here if n.startswith("__"))})
