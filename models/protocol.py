"""The iterative-run protocol: how a model that optimises or samples step by step reports progress.

An iterative or stochastic model has ``iterate(**inputs, steps=..., **options)``: a generator that
yields :class:`IterationUpdate` between steps and returns the (N, B, H, W) result. The engine drives
it with :func:`iterate_or_forward`; throwing :class:`StopRequested` into it ends the run early with
the model's best estimate so far.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn


class StopRequested(Exception):
    """Thrown into an iterative model's ``iterate`` generator (``gen.throw(StopRequested())``) to end
    it early: the model returns its best estimate so far instead of being cancelled."""


def drain(gen):
    """Run a generator to its end and return its return value (an iterative model's ``forward``
    is its ``iterate`` run with nobody watching the updates)."""
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


@dataclass
class IterationUpdate:
    """What an iterative or stochastic model reports between steps.

    ``preview`` is the current (N, B, H, W) estimate when the model has one to show."""

    step: int
    total: int
    loss: float | None = None
    preview: torch.Tensor | None = None
    message: str = ""


def iterate_or_forward(model: nn.Module, inputs: dict, **options) -> Iterator[IterationUpdate]:
    """Drive a model: ``model.iterate(**inputs, **options)`` when it has one (yields updates and
    returns the result), else one forward pass. Use ``result = yield from iterate_or_forward(...)``."""
    if hasattr(model, "iterate"):
        result = yield from model.iterate(**inputs, **options)
        return result
    return model(**inputs)
