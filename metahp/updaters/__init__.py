"""Updaters: how the meta-policy's distribution moves. One file per updater; add one export line below.

Each factory validates its hyperparameters (pydantic) and returns an ``Updater`` of pure functions.
"""

from metahp.updaters.base import Feedback, State, Updater
from metahp.updaters.constant import constant
from metahp.updaters.exp3 import exp3
from metahp.updaters.sliding_window_ucb import sliding_window_ucb
from metahp.updaters.softmax_gradient import softmax_gradient
from metahp.updaters.tampo import tampo
from metahp.updaters.thompson import thompson
from metahp.updaters.uniform import uniform

UPDATERS = {f.__name__: f for f in (tampo, softmax_gradient, exp3, sliding_window_ucb, thompson, constant, uniform)}

__all__ = ["UPDATERS", "Feedback", "State", "Updater", *UPDATERS]
