"""``metahp.adapt``'s settings as one typed configuration, checked when it is built (in the manner of TRL's GRPOConfig).

>>> from metahp.config import AdaptConfig
>>> config = AdaptConfig(updater="softmax_gradient", updater_options={"lr": 0.25}, per="completion",
...                      values=[0.7, 1.0, 1.3], reward="informativeness")
>>> config.updater, config.updater_options
('softmax_gradient', {'lr': 0.25})
>>> AdaptConfig(per="group")
Traceback (most recent call last):
    ...
metahp.errors.ConfigError: per='group': use 'batch' (one value per generation batch), ...

``metahp.adapt(trainer, config)`` attaches it; ``metahp.adapt(trainer, knob=..., updater=..., **fields)`` builds it
from keywords (an updater's or reward's option given as a bare keyword, e.g. ``lr=0.25``, is routed to the component
that declares it). Everything that needs no trainer is checked here: names, options against each component's
factory, values of ``per``, ``combine``, ``selection``, ``nucleus_p``, ``seed``; the adapter then checks what only the
trainer knows (which knobs it can sample with, its group size, its settings).
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, InstanceOf, ValidationError, field_validator, model_validator

from metahp import _options
from metahp.errors import ConfigError
from metahp.knobs import KNOBS, Knob, make_knob
from metahp.knobset import check_combine, check_context, check_hyperparameter_per, check_per, default_reward_for
from metahp.policy import check_knob_reward, check_seed, components
from metahp.rewards import REWARDS, Reward
from metahp.several_knobs import check_knob_names
from metahp.updaters import UPDATERS, Updater

DEFAULT_UPDATER = "exp3"
"""``metahp.adapt``'s default updater, chosen by evidence (docs/benchmarks.md): over five tasks and five seeds it never
trailed the best fixed temperature (picked in hindsight) by more than 0.049 held-out accuracy, the smallest worst
case of all 13 strategies, while ``tampo`` (the paper's rule, ``updater="tampo"``) froze cold and lost 0.28 on the
task whose best temperature moves. (``metahp.meta_policy`` keeps ``tampo``, the paper's rule exactly.)"""

# The fields that are adapter options: an adapter module lists those it honours in ADAPTER_OPTIONS; adapt refuses one
# set away from its default on a trainer whose adapter does not.
ADAPTER_FIELDS = ("likelihoods", "eval_value", "context")


class AdaptConfig(BaseModel):
    """How ``metahp.adapt`` learns a run's sampling knobs: what to adapt, how it learns, how often it draws.

    Built from keywords (``AdaptConfig(updater="tampo", updater_options={"alpha": 0.1})``) and checked at once; every
    invalid field is a ``metahp.ConfigError`` that says what works. Frozen: build another to change a field.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    # -- what to adapt ------------------------------------------------------------------------------------------
    knob: str | InstanceOf[Knob] | tuple[str | InstanceOf[Knob], ...] = Field(
        "temperature", description="The knob(s) to adapt: a registered knob's name, its backend keyword "
        "('temperature', 'top_p', 'top_k', 'min_p'; the hyperparameters 'learning_rate' (a multiplier on the "
        "scheduled rate), 'beta', 'epsilon', 'epsilon_high': docs/hyperparameters.md; metahp.KNOBS), a Knob instance "
        "with its own grid (Temperature([0.7, 1.0])), or a tuple of them (several knobs: see combine).")
    values: Any = Field(
        None, description="The candidate grid of one knob given by name, e.g. [0.7, 1.0, 1.3]; None: the knob's "
        "default grid (0.6..1.5 for the temperature). With several knobs, put each grid in a Knob instance.")
    # -- how it learns ------------------------------------------------------------------------------------------
    updater: str | InstanceOf[Updater] = Field(
        DEFAULT_UPDATER, description="How the distribution over candidates moves: a registered updater's name "
        "(metahp.UPDATERS: 'exp3', 'tampo', 'softmax_gradient', ...) or an Updater instance "
        "(metahp.updaters.tampo(alpha=0.1)). Default 'exp3', the benchmarks' most robust rule "
        "(metahp.config.DEFAULT_UPDATER).")
    reward: str | InstanceOf[Reward] | None = Field(
        None, description="What each batch tells the updater: a registered reward's name (metahp.REWARDS), a "
        "Reward instance, or None for the updater's default ('trajectory_likelihood' for per-candidate updaters, "
        "'reward_improvement' for bandits, 'informativeness' for the uniform mixture per completion or per prompt; "
        "the same on every trainer: metahp.knobset.default_reward_for).")
    updater_options: dict[str, Any] = Field(
        default_factory=dict, description="The updater's hyperparameters, checked against its factory: "
        "{'alpha': 0.05} for tampo, {'lr': 0.25} for softmax_gradient, {'gamma': 0.1} for exp3. Empty with an "
        "Updater instance (its factory call holds them).")
    reward_options: dict[str, Any] = Field(
        default_factory=dict, description="The reward's options, checked against its class: {'normalizer': "
        "'softmax'} for trajectory_likelihood, {'baseline_alpha': 0.2} for reward_improvement. Empty with a Reward "
        "instance.")
    selection: Literal["nucleus", "sample", "greedy"] | None = Field(
        None, description="How a value is drawn from the distribution: 'nucleus' (TAMPO's), 'sample' or 'greedy'; "
        "None: the updater's default ('nucleus' for tampo, 'sample' for exp3).")
    nucleus_p: float | None = Field(
        None, description="The probability mass of the nucleus under selection='nucleus', in (0, 1]; None: 0.7. "
        "Refused under another selection, where it would do nothing.")
    seed: int | None = Field(
        None, description="The meta-policies' seed (the first knob's policy gets seed, the next seed + 1, ...); "
        "None: the trainer's seed.")
    # -- how often it draws -------------------------------------------------------------------------------------
    per: Literal["batch", "completion", "prompt"] = Field(
        "batch", description="How often a value is drawn: 'batch' (one per generation batch), 'completion' (one "
        "per completion, each group mixing the candidates in proportion to the meta-policy) or 'prompt' (one per "
        "prompt's group, from a meta-policy per context, e.g. the prompt's past pass rate).")
    combine: Literal["factored", "product"] = Field(
        "factored", description="With several knobs: 'factored' (one meta-policy per knob) or 'product' (one over "
        "every combination of their grids).")
    # -- adapter options: honoured by some trainers' adapters only ----------------------------------------------
    likelihoods: Literal["auto", "generate", "forward"] = Field(
        "auto", description="Adapter option, TRL only: where the per-candidate likelihoods come from: 'generate' "
        "(the logits transformers' generate sampled from, captured: no extra forward), 'forward' (one no-grad "
        "forward over the rows with non-zero advantage; any backend, vLLM included) or 'auto' (generate where "
        "possible, else forward).")
    eval_value: Any = Field(
        None, description="Adapter option, TRL only: the knob's value for evaluation generations ({name: value} "
        "with several knobs); None keeps the trainer's configured value.")
    context: Callable[[Any], str] | None = Field(
        None, description="Adapter option, reference trainer only, with per='prompt': maps a prompt's context (its "
        "past pass rate, None if unseen) to the label of the meta-policy that draws its value, declaring every "
        "label it gives as context.labels (metahp.knobset.Context); None: pass-rate buckets "
        "(metahp.knobset.pass_rate_bucket, labels metahp.knobset.BUCKETS).")

    def __init__(self, **fields: Any):
        try:
            super().__init__(**fields)
        except ValidationError as err:
            raise ConfigError(_describe(err)) from None

    # -- eager checks (the messages are those of the layers that use each field) ----------------------------------
    @field_validator("knob", mode="before")
    @classmethod
    def _knob(cls, knob):
        if isinstance(knob, list):
            knob = tuple(knob)
        if knob == ():
            raise ConfigError("knob=() adapts nothing; name at least one knob, e.g. knob='temperature'.")
        return knob

    @field_validator("updater", mode="before")
    @classmethod
    def _updater(cls, updater):
        if not isinstance(updater, str | Updater):
            components(updater)  # the error meta_policy gives, naming what is valid
        return updater

    @field_validator("reward", mode="before")
    @classmethod
    def _reward(cls, reward):
        if reward is not None and not isinstance(reward, str | Reward):
            components(DEFAULT_UPDATER, reward)  # the error meta_policy gives (it does not depend on the updater)
        return reward

    @field_validator("per", mode="before")
    @classmethod
    def _per(cls, per):
        return check_per(per)

    @field_validator("combine", mode="before")
    @classmethod
    def _combine(cls, combine):
        return check_combine(combine)

    @field_validator("seed", mode="before")
    @classmethod
    def _seed(cls, seed):
        return check_seed(seed)

    @field_validator("likelihoods", mode="before")
    @classmethod
    def _likelihoods(cls, likelihoods):
        if likelihoods not in ("auto", "generate", "forward"):
            raise ConfigError(f"likelihoods={likelihoods!r}: use 'generate' (captured in generate, no extra forward), "
                              f"'forward' (one no-grad forward, any backend) or 'auto' (generate where possible).")
        return likelihoods

    @model_validator(mode="after")
    def _components(self) -> AdaptConfig:
        knobs = self.knob if isinstance(self.knob, tuple) else (self.knob,)
        names = [k.name if isinstance(k, Knob) else k for k in knobs]
        check_knob_names(names, names, self.values, "metahp")  # twice, truncations together, one grid for several
        if self.context is not None and self.per != "prompt":
            raise ConfigError(f"context= picks the meta-policy of each prompt's group: it needs per='prompt', not "
                              f"per={self.per!r}.")
        check_context(self.context)
        reward = self.reward if self.reward is not None else default_reward_for(self.updater, self.per)
        parts = components(self.updater, reward, self.selection, self.component_options())
        built = [make_knob(k) for k in knobs if isinstance(k, Knob) or k in KNOBS]
        check_hyperparameter_per(built, self.per)
        for k in built:  # a hyperparameter knob has no likelihood to score
            check_knob_reward(k, parts.updater, parts.reward)
        if len(knobs) == 1 and (isinstance(knobs[0], Knob) or knobs[0] in KNOBS):
            # the grid, and the updater's state on it (e.g. constant's value must be a candidate)
            parts.updater.init(make_knob(knobs[0], self.values).values)
        return self

    def component_options(self) -> dict[str, Any]:
        """The flat options ``metahp.meta_policy`` takes beside ``reward=`` and ``selection=``: the updater's, the
        reward's and nucleus_p (if set), each checked against the component it belongs to."""
        updater_factory = UPDATERS.get(self.updater) if isinstance(self.updater, str) else None
        if isinstance(self.updater, str) and updater_factory is None:
            components(self.updater)  # the unknown-updater error, with the valid names
        _check_owned("updater_options", self.updater_options, self.updater, updater_factory)
        reward = self.reward if self.reward is not None else default_reward_for(self.updater, self.per)
        reward_cls = REWARDS.get(reward) if isinstance(reward, str) else None
        if isinstance(reward, str) and reward_cls is None:
            components(self.updater, reward)  # the unknown-reward error, with the valid names
        _check_owned("reward_options", self.reward_options, reward, reward_cls)
        if updater_factory is not None:  # meta_policy gives the updater first pick of the flat options
            clash = sorted(set(self.reward_options) & set(_options.accepted(updater_factory)))
            if clash:
                raise ConfigError(f"reward_options {clash} are also hyperparameters of updater {self.updater!r}; pass "
                                  f"the reward as an instance instead (reward={type(reward).__name__}(...)).")
        extra = {} if self.nucleus_p is None else {"nucleus_p": self.nucleus_p}
        return {**self.updater_options, **self.reward_options, **extra}

    def attach_options(self, honoured: tuple[str, ...] = ()) -> dict[str, Any]:
        """The keywords of an adapter's ``attach(trainer, **options)``: knob, updater, values, seed, per, combine,
        the adapter options it ``honoured`` that are set away from their defaults, then reward, selection and the
        components' options (``component_options``)."""
        options: dict[str, Any] = {"knob": self.knob, "updater": self.updater, "values": self.values,
                                   "seed": self.seed, "per": self.per, "combine": self.combine}
        for name in honoured:
            if name in ADAPTER_FIELDS and getattr(self, name) != field_default(name):
                options[name] = getattr(self, name)
        if self.reward is not None:
            options["reward"] = self.reward
        if self.selection is not None:
            options["selection"] = self.selection
        return {**options, **self.component_options()}

    @classmethod
    def from_keywords(cls, **keywords: Any) -> AdaptConfig:
        """A config from ``metahp.adapt``'s keywords: its fields, plus any updater or reward option given bare (e.g.
        ``lr=0.25``), routed to the component that declares it as ``meta_policy`` routes its options."""
        fields = {k: v for k, v in keywords.items() if k in cls.model_fields}
        bare = {k: v for k, v in keywords.items() if k not in cls.model_fields}
        if bare:
            if "nucleus_p" in fields:
                bare["nucleus_p"] = fields["nucleus_p"]
            taken = components(fields.get("updater", DEFAULT_UPDATER), fields.get("reward"), fields.get("selection"),
                               bare).options
            for into, took in (("updater_options", taken["updater"]), ("reward_options", taken["reward"])):
                given = dict(fields.get(into) or {})
                for key in set(given) & set(took):
                    raise ConfigError(f"{key!r} is given twice, as {key}= and in {into}; give it once.")
                fields[into] = {**given, **took}
        return cls(**fields)

    @classmethod
    def fields_doc(cls, indent: int = 4) -> str:
        """Every field with its default and description, one paragraph each (for docstrings)."""
        lines = []
        for name, field in cls.model_fields.items():
            default = "{}" if field.default_factory is dict else repr(field.default)
            lines.append(textwrap.fill(f"{name} (default {default}): {field.description}", width=116,
                                       initial_indent=" " * indent, subsequent_indent=" " * (indent + 4),
                                       break_on_hyphens=False))
        return "\n".join(lines)


def field_default(name: str):
    """A field's default value."""
    field = AdaptConfig.model_fields[name]
    return field.default_factory() if field.default_factory is not None else field.default


def _check_owned(where: str, options: dict, component, factory) -> None:
    """``options`` must be empty for a component passed as an instance, and each one declared by its factory."""
    if not options:
        return
    if factory is None:  # an instance: its constructor took its options already
        name = getattr(component, "name", component)
        raise ConfigError(f"{where}={options!r} cannot go with the {where.split('_')[0]} {name!r}, which is passed as "
                          f"an instance: set them where the instance is built, not beside it.")
    unknown = sorted(set(options) - set(_options.accepted(factory)))
    if unknown:
        raise ConfigError(f"{where}: {unknown} are not options of {where.split('_')[0]} {component!r}; its options "
                          f"are {_options.accepted(factory)}.")


def _describe(err: ValidationError) -> str:
    """One ConfigError message from pydantic's errors: ours as raised, pydantic's with the field and what works."""
    messages, seen = [], set()
    for e in err.errors():
        if e["loc"] and e["loc"][0] in seen:  # a union's members each fail: the first says enough
            continue
        seen.update(e["loc"][:1])
        cause = (e.get("ctx") or {}).get("error")
        if isinstance(cause, ConfigError):
            messages.append(str(cause))
            continue
        name = str(e["loc"][0]) if e["loc"] else "config"
        if e["type"] == "extra_forbidden":
            messages.append(f"unknown field {name}={e['input']!r:.80}; the fields are {list(AdaptConfig.model_fields)} "
                            f"(an updater's or reward's options go in updater_options / reward_options).")
            continue
        field = AdaptConfig.model_fields.get(name)
        what = f" {name}: {field.description}" if field is not None else ""
        messages.append(f"{name}={e.get('input')!r:.80}: {e['msg']}.{what}")
    return " ".join(dict.fromkeys(messages))


AdaptConfig.__doc__ += "\n    Fields:\n\n" + AdaptConfig.fields_doc() + "\n"

__all__ = ["ADAPTER_FIELDS", "DEFAULT_UPDATER", "AdaptConfig", "field_default"]
