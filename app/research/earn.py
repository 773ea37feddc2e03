"""The rule by which a trained network "earns its place" (issue 23), shared by the weight tests
(tests/models/test_weights_earn.py) and the card tools (app.research.mulsr_card), so that a run's
file can be judged before it is installed exactly as the test will judge it once it is.

On a held-out crop the network's gain over its own classical base must reach ``EARN`` of the gain
its model card states, and two damaged copies must fall short of it: the network's correction
halved (base + (out - base) / 2) and the network with its last layer zeroed (the weights unused).

Why 0.9. For a correction r added to a base that falls short of the truth by e = gt - base, the
squared error at scale a is |e|^2 - 2a<e, r> + a^2 |r|^2, so the error removed at scale a is
2ab - a^2 c (b = <e, r>, c = |r|^2), and for the small gains of these networks the PSNR gain is
proportional to it. Halving a correction at its best scale (a* = b/c = 1) keeps (b - c/4) / (2b - c)
= 75 % of its gain; one that overshoots (a* < 1, the usual case for a network applied to scenes it
was not trained on) keeps more: 87 % at a* = 0.84. A margin at or under 75 % therefore rejects every
well-calibrated network (its halved copy still earns), and only a correction that is too small
passes. At 0.9 the halved copy of any network with a* > 0.81 falls short (small-gain limit;
tests/models/test_weights_earn.py checks the arithmetic), and a shipped file must keep 90 % of its
card's gain: a change of the network, the engine or the base that loses a tenth of the gain fails
the test; float differences between machines (1e-4 dB) do not.
"""
from __future__ import annotations

import torch

EARN = 0.9

# the output layer of each trained network: zeroed, the model returns its base exactly (the residual
# heads of MulSR and HSR-Diff are initialised at zero) or, for CST, the bicubic skip alone
LAST_LAYER = {"cst": "tail", "mulsr": "tail.1", "hsrdiff": "net.out"}


def earns(gain: float, card_gain: float) -> bool:
    """True when ``gain`` (dB over the base) reaches EARN of the card's positive gain."""
    return card_gain > 0 and gain >= EARN * card_gain


def zero_layer(model: torch.nn.Module, name: str) -> None:
    """Zero the output layer of registered model ``name`` in place. For a weight-normalised
    convolution the magnitude (``original0``) is zeroed, not the direction (``original1``), by whose
    norm it is divided."""
    layer = model.get_submodule(LAST_LAYER[name])
    with torch.no_grad():
        for n, p in layer.named_parameters():
            if not n.endswith("original1"):
                p.zero_()


def zeroing_loader(name: str, load):
    """A ``models.spec.load_weights`` replacement: ``load`` (the original), then ``zero_layer``."""
    def loader(model, wf):
        load(model, wf)
        zero_layer(model, name)
    return loader


def verdict(gain: float, half_gain: float) -> str:
    """One line: would the weight test accept a file whose card states ``gain`` (and whose halved
    correction gains ``half_gain``)?"""
    ratio = half_gain / gain * 100 if gain else float("nan")
    ok = gain > 0 and not earns(half_gain, gain)
    return (f"half of the residual: {half_gain:+.3f} dB ({ratio:.0f} % of the whole; the weight test "
            f"{'passes' if ok else 'FAILS'}: it needs under {EARN * 100:.0f} %)")
