"""The model registry: every model file, imported in the order the GUI lists them, registers its own
spec (``models.spec.register``); this module looks them up.

The names other code uses (``ModelSpec``, ``ModelError``, ``INPUT_TITLES``, ...) are re-exported
from ``models.spec``, and the iterative-run protocol (``IterationUpdate``, ``StopRequested``,
``drain``, ``iterate_or_forward``) from ``models.protocol``.
"""
from __future__ import annotations

# importing a model file registers its models; the order is the order the GUI lists them
from models import baselines, classical, cst, umsft, hsr_diff, mulsr  # noqa: F401
from models.protocol import IterationUpdate, StopRequested, drain, iterate_or_forward  # noqa: F401
from models.spec import (_REGISTRY, INPUT_TITLES, INPUTS, WEIGHTS_DIR, ModelError, ModelSpec,  # noqa: F401
                         WeightsFile, load_weights, register, sha256_of)


def get(name: str) -> ModelSpec:
    key = name.strip().lower()
    if key not in _REGISTRY:
        raise ModelError(f"unknown model '{name}' (available: {', '.join(sorted(_REGISTRY))})")
    return _REGISTRY[key]


def all_specs() -> list[ModelSpec]:
    return list(_REGISTRY.values())
