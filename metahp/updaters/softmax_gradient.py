"""Softmax policy gradient on the meta-policy, with the per-candidate advantage as each arm's advantage.

Preferences H (start at 0), pi = softmax(H). Two forms:

    natural:  H_k <- H_k + lr * a_k                                (exponential weights, Hedge)
    vanilla:  H_k <- H_k + lr * pi_k * (a_k - sum_j pi_j a_j)      (exact gradient of E_pi[a])

The natural form is the natural policy gradient of the softmax policy: pi_k is proportional to
exp(lr * sum_t a_k(t)), so it concentrates at a rate set by the size of the advantages, unlike TAMPO's
min-max. The vanilla form's baseline sum_j pi_j a_j is the expected advantage under pi; any baseline that is
the same for every candidate cancels in the softmax, so the natural form needs none.
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from pydantic import Field, validate_call

from metahp.updaters.base import Feedback, State, Updater, softmax


@validate_call
def softmax_gradient(
    lr: Annotated[float, Field(gt=0, le=1e4)] = 1.0,
    form: Literal["natural", "vanilla"] = "natural",
) -> Updater:
    """Softmax preferences moved by the per-candidate advantages with step size ``lr``."""

    def init(values: tuple[float, ...]) -> State:
        return {"preferences": np.zeros(len(values))}

    def update(state: State, feedback: Feedback) -> State:
        h, a = state["preferences"], feedback.advantages
        if form == "natural":
            step = a
        else:
            pi = softmax(h)
            step = pi * (a - pi @ a)
        h = h + lr * step
        return {"preferences": h - h.max()}  # softmax is shift-invariant; keep H bounded above

    def probs(state: State) -> np.ndarray:
        return softmax(state["preferences"])

    return Updater("softmax_gradient", "per_candidate", "sample", init, update, probs,
                   {"lr": lr, "form": form})
