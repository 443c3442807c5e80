"""Knobs: the settings metahp can adapt. One file per knob; add one ``register_knob`` line below (a truncation
knob subclasses ``TruncationKnob``, which applies the batch's temperature first; a knob that changes the update
rather than the sampling, such as the learning rate, subclasses ``HyperparameterKnob``, role "updates").

``KNOBS`` (name -> class) is the only truth every adapter and the reference trainer read: which knobs exist, their
backend keyword, role (scales or truncates) and off value (see ``Knob``). A knob registered from outside metahp,
e.g. in a user's module or a test, is adapted like a built-in one wherever its trainer can sample with it.
"""

from __future__ import annotations

from metahp.errors import ConfigError
from metahp.knobs.base import Knob
from metahp.knobs.beta import Beta
from metahp.knobs.epsilon import Epsilon
from metahp.knobs.epsilon_high import EpsilonHigh
from metahp.knobs.hyperparameter import HyperparameterKnob
from metahp.knobs.learning_rate import LearningRate
from metahp.knobs.min_p import MinP
from metahp.knobs.product import ProductKnob
from metahp.knobs.temperature import Temperature
from metahp.knobs.top_k import TopK
from metahp.knobs.top_p import TopP
from metahp.knobs.truncation import TruncationKnob

KNOBS: dict[str, type[Knob]] = {}
ROLES = ("scales", "truncates", "updates")


def register_knob(cls: type[Knob]) -> type[Knob]:
    """Add a knob class to ``KNOBS`` after checking what adapters rely on (usable as a decorator)."""
    if not (isinstance(cls, type) and issubclass(cls, Knob)):
        raise ConfigError(f"register_knob takes a Knob subclass, got {cls!r}.")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name.isidentifier():
        raise ConfigError(f"{cls.__name__}.name must be the backend keyword (an identifier such as 'top_p'), got "
                          f"{name!r}.")
    if cls.role not in ROLES:
        raise ConfigError(f"{cls.__name__}.role must be one of {ROLES}, got {cls.role!r}.")
    if (cls.role == "updates") != issubclass(cls, HyperparameterKnob):
        raise ConfigError(f"{cls.__name__}: a knob that changes the update subclasses metahp.knobs.HyperparameterKnob "
                          f"and has role 'updates' (a sampling knob has role 'scales' or 'truncates'); got role "
                          f"{cls.role!r}.")
    if name in KNOBS and KNOBS[name] is not cls:
        raise ConfigError(f"a knob named {name!r} is registered already ({KNOBS[name].__name__}); pick another name.")
    cls(None)  # the default grid must be valid: adapters build knobs by name
    KNOBS[name] = cls
    return cls


for _cls in (Temperature, TopP, TopK, MinP, LearningRate, Beta, Epsilon, EpsilonHigh):
    register_knob(_cls)


def sampling_names() -> list[str]:
    """The registered knobs that change the sampling (role scales or truncates): what a sampler takes."""
    return [name for name, cls in KNOBS.items() if cls.role != "updates"]


def hyperparameter_names() -> list[str]:
    """The registered knobs that change the update (role updates), in registration order."""
    return [name for name, cls in KNOBS.items() if cls.role == "updates"]


def truncation_names() -> list[str]:
    """The registered knobs that truncate the support, in registration order."""
    return [name for name, cls in KNOBS.items() if cls.role == "truncates"]


def active_truncations(settings: dict) -> list[tuple[str, float]]:
    """The truncating knobs that ``settings`` ({name: value}) switch on, as (name, value) pairs."""
    return [(name, settings[name]) for name in truncation_names()
            if name in settings and not KNOBS[name].is_off(settings[name])]


def make_knob(knob: str | Knob, values=None) -> Knob:
    """A knob instance from its name (``"temperature"``) or an instance (then ``values`` must be None)."""
    if isinstance(knob, Knob):
        if values is not None:
            raise ConfigError("pass candidate values either in the Knob instance or as values=, not both.")
        return knob
    if not isinstance(knob, str) or knob not in KNOBS:
        raise ConfigError(f"unknown knob {knob!r}; valid knobs: {sorted(KNOBS)}.")
    return KNOBS[knob](values)


__all__ = ["KNOBS", "Beta", "Epsilon", "EpsilonHigh", "HyperparameterKnob", "Knob", "LearningRate", "MinP",
           "ProductKnob", "Temperature", "TopK", "TopP", "TruncationKnob", "active_truncations", "hyperparameter_names",
           "make_knob", "register_knob", "sampling_names", "truncation_names"]
