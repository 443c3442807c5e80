"""Thin adapters between metahp's meta-policies and training frameworks (shipped as metahp.integrations).

Each adapter module exposes ``supports(trainer) -> bool``,
``attach(trainer, *, knob, updater, values, seed, per, combine, **options) -> adapter`` (an object with ``.policy``;
``options``: the adapter options it honours that are set, then the meta-policies' options as ``meta_policy`` takes them)
and ``ADAPTER_OPTIONS``, the adapter options of ``metahp.config.AdaptConfig`` it honours (none if absent).
Modules are imported lazily, so importing metahp never imports a framework.
"""

from __future__ import annotations

import importlib

from metahp.config import ADAPTER_FIELDS, DEFAULT_UPDATER, AdaptConfig, field_default
from metahp.errors import ConfigError
from metahp.knobs import Knob
from metahp.rewards import MEASUREMENTS, REWARDS, Reward
from metahp.updaters import Updater

# module name -> what it adapts (for the error message); tried in order.
ADAPTERS = {
    "metahp.integrations.reference": "metahp.lab.grpo.GRPOTrainer (metahp's reference GRPO loop)",
    "metahp.integrations.trl": "trl.GRPOTrainer",
    "metahp.integrations.verl": "verl.trainer.ppo.ray_trainer.RayPPOTrainer (verl's legacy fit loop)",
    "metahp.integrations.verl_v1": "verl.trainer.ppo.v1 PPOTrainer (verl's default trainer, sync mode)",
}


class _Default:
    """A positional field left out of ``adapt`` (shown as its value in help): beside a config, one passed at its
    default value is still told from one left out, and refused."""

    def __init__(self, value):
        self.value = value

    def __repr__(self) -> str:
        return repr(self.value)


_KNOB, _UPDATER, _VALUES, _SEED = _Default("temperature"), _Default(DEFAULT_UPDATER), _Default(None), _Default(None)


def adapt(trainer, knob: AdaptConfig | str | Knob | tuple = _KNOB, updater: str | Updater = _UPDATER,
          values=_VALUES, seed: int | None = _SEED, **fields):
    """Attach meta-policies over a run's sampling knobs to ``trainer``; returns the adapter (``adapter.policy``).

    ``metahp.adapt(trainer, config)`` with a ``metahp.config.AdaptConfig``, or ``metahp.adapt(trainer, knob=...,
    updater=..., **fields)`` with its fields as keywords; an updater's or reward's option may be given bare
    (``lr=0.25``, ``alpha=0.1``, ``normalizer=...``) and goes to the component that declares it. Everything that
    needs no trainer is checked before the trainer is touched; an adapter option that the trainer's adapter does not
    honour (e.g. ``likelihoods`` outside TRL) is refused.

    The default updater is ``metahp.config.DEFAULT_UPDATER`` (``exp3``), chosen by evidence (docs/benchmarks.md);
    ``tampo``, the paper's rule, is ``updater="tampo"``.
    """
    config = _config(knob, updater, values, seed, fields)
    for module_name, what in ADAPTERS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name and err.name.startswith("metahp.integrations"):
                continue  # adapter not shipped in this version
            raise
        if module.supports(trainer):
            honoured = tuple(getattr(module, "ADAPTER_OPTIONS", ()))
            for name in ADAPTER_FIELDS:
                value = getattr(config, name)
                if name not in honoured and value != field_default(name):
                    raise ConfigError(f"{name}={value!r:.80} is an adapter option that the adapter of {what} does not "
                                      f"honour; there the adapter options are {list(honoured) or 'none'}. Leave "
                                      f"{name} at its default ({field_default(name)!r}).")
            _check_measures(config, tuple(getattr(module, "MEASURES", ())), what)
            return module.attach(trainer, **config.attach_options(honoured))
    raise ConfigError(f"metahp.adapt: no adapter for {type(trainer).__module__}.{type(trainer).__qualname__}; "
                      f"supported trainers: {list(ADAPTERS.values())}.")


def _check_measures(config: AdaptConfig, measures: tuple[str, ...], what: str) -> None:
    """A reward fitted to a hyperparameter reads what the trainer measures in its update (``Reward.needs_measured``);
    refuse, before the trainer is touched, one whose measurement this adapter does not provide (its ``MEASURES``)."""
    reward = config.reward
    cls = REWARDS.get(reward) if isinstance(reward, str) else type(reward) if isinstance(reward, Reward) else None
    missing = [m for m in getattr(cls, "needs_measured", ()) if m not in measures]
    if missing:
        raise ConfigError(f"reward {cls.name!r} reads {missing} measured in the trainer's update, which the adapter "
                          f"of {what} does not measure (it measures {list(measures) or 'nothing'}); use a bandit "
                          f"updater with reward='reward_improvement' there, or metahp's reference trainer, which "
                          f"measures {list(MEASUREMENTS)}.")


def _config(knob, updater, values, seed, fields: dict) -> AdaptConfig:
    """The AdaptConfig of ``adapt(trainer, knob, updater, values, seed, **fields)`` (``knob`` may be the config)."""
    config = fields.pop("config", None)
    if isinstance(knob, AdaptConfig):
        config, knob = knob, _KNOB
    positional = {"knob": knob, "updater": updater, "values": values, "seed": seed}
    given = [*fields, *(name for name, value in positional.items() if not isinstance(value, _Default))]
    positional = {name: value.value if isinstance(value, _Default) else value for name, value in positional.items()}
    if config is None:
        return AdaptConfig.from_keywords(**positional, **fields)
    if not isinstance(config, AdaptConfig):
        raise ConfigError(f"config={config!r:.80} must be a metahp.AdaptConfig.")
    if given:
        raise ConfigError(f"pass either an AdaptConfig or its fields as keywords, not both (got the config and "
                          f"{given}); to change a field, build another AdaptConfig.")
    return config


adapt.__doc__ += "\n    Fields (metahp.config.AdaptConfig):\n\n" + AdaptConfig.fields_doc(indent=8) + "\n"

__all__ = ["ADAPTERS", "DEFAULT_UPDATER", "AdaptConfig", "adapt"]
