"""The TRL adapter's hyperparameter knobs (learning_rate, beta, epsilon, epsilon_high): every copy TRL 1.16 keeps of
each, the learning-rate multiplier on the optimizer transformers builds, what each knob needs of the run, and the
measurements of the rewards fitted to them (kl, clip_fraction), read from what TRL's loss logs.

Kept apart from integrations/trl.py, which holds the sampling knobs' copies and TRL's generation and scoring; the
TRL-private attribute names are in ``trl_1_16.RUN_TIME_HYPERPARAMETERS``. The adapter mixes this in.
"""

from __future__ import annotations

import math

from metahp.errors import ConfigError, StateError
from metahp.knobs import KNOBS
from metahp.knobs.learning_rate import LearningRateScale

from . import trl_1_16 as trl_compat

# What this adapter measures for the rewards fitted to a hyperparameter (metahp.adapt refuses a reward needing
# another): what TRL's loss logs per micro-batch. Not grad_alignment or update_alignment: each needs the previous
# optimizer step's whole gradient (or parameter change) kept across steps and saved in every checkpoint for an exact
# resume (sharded under FSDP, a model-sized tensor beside the adapter's JSON state); metahp's reference trainer
# measures them.
MEASURES = tuple(trl_compat.LOGGED_MEASUREMENTS)


class HyperparameterCopies:
    """Mixed into TRLAdapter: registers the copies of its hyperparameter knobs and drives the LR multiplier."""

    def _init_hyperparameters(self, trainer, names) -> None:
        needed = sorted({m for p in self.knobset.policies.values() for m in p.reward.needs_measured})
        missing = [m for m in needed if m not in MEASURES]
        if missing:
            raise ConfigError(f"{missing} cannot be measured on TRL (this adapter measures {list(MEASURES)}, read from "
                              f"what TRL's loss logs); gradient_alignment and update_alignment need the previous "
                              f"optimizer step's gradient or update saved in every checkpoint, which metahp's "
                              f"reference trainer (metahp.lab.grpo) does. "
                              f"On TRL adapt learning_rate with updater='exp3' and reward='reward_improvement'.")
        if "clip_fraction" in needed and not trl_compat.computes_old_logprobs(trainer):
            raise ConfigError("clip_target reads TRL's clipped fraction, but with these settings TRL computes no old "
                              "log-probs: the loss's ratio is exactly 1 and nothing ever clips "
                              f"(num_iterations={trainer.num_iterations}, gradient_accumulation_steps="
                              f"{trainer.args.gradient_accumulation_steps}, steps_per_generation="
                              f"{trainer.args.steps_per_generation}). Set num_iterations=2 or more, or adapt epsilon "
                              f"with updater='exp3' and reward='reward_improvement'.")
        self.learning_rate_scale: LearningRateScale | None = None  # on trainer.optimizer, built in train()
        self._learning_rate_multiplier = 1.0
        for name in names:
            self._hyperparameter_copies(trainer, name)
        # the steps' measurements since the last meta-update, from TRL's metrics buffer (a callback per step)
        self.step_measurements = _step_measurements(trainer, needed) if needed else None
        if self.step_measurements is not None:
            trainer.add_callback(self.step_measurements)

    def measured_since_last_update(self) -> dict[str, float | None] | None:
        """Each measurement's mean over the optimizer steps since the last meta-update (None: no step yet, e.g. the
        first generation), and a fresh start; None when no reward reads measurements."""
        steps = self.step_measurements
        if steps is None:
            return None
        measured = {name: sum(v) / len(v) if v else None for name, v in steps.pending.items()}
        steps.pending = {name: [] for name in steps.pending}
        return measured

    def state_dict(self) -> dict:
        """The kit's envelope, plus the steps' measurements not yet fed to a meta-update (resume continues them)."""
        state = super().state_dict()
        if self.step_measurements is not None:
            state["measured"] = {name: list(v) for name, v in self.step_measurements.pending.items()}
        return state

    def load_state_dict(self, state) -> None:
        pending = None
        if isinstance(state, dict) and "measured" in state:
            if self.step_measurements is not None:
                pending = _check_pending(state["measured"], tuple(self.step_measurements.pending))
            state = {key: value for key, value in state.items() if key != "measured"}
        super().load_state_dict(state)  # all or nothing; then the pending measurements
        if pending is not None:
            self.step_measurements.pending = pending

    def _hyperparameter_copies(self, trainer, name: str) -> None:
        """Every copy TRL keeps of a hyperparameter: the attributes its loss reads at run time
        (``trl_1_16.RUN_TIME_HYPERPARAMETERS``; epsilon_high only where the run is symmetric, epsilon_high unset) and
        the GRPOConfig field, for user code and callbacks; the learning-rate multiplier is held here and applied to
        every optimizer step (``LearningRateScale``, on the optimizer transformers builds in train())."""
        if name == "learning_rate":
            self.copies.add(name, "optimizer.learning_rate", lambda: self._learning_rate_multiplier,
                            self._set_learning_rate_multiplier)
            return
        for attr in trl_compat.RUN_TIME_HYPERPARAMETERS[name]:
            if name == "epsilon" and attr == "epsilon_high" and (trainer.args.epsilon_high is not None
                                                                  or "epsilon_high" in self.knob_names):
                continue  # an asymmetric run (DAPO's clip-higher, or the epsilon_high knob) keeps its upper bound
            self.copies.attribute(name, f"trainer[{attr}].{name}", trainer, attr)
        self.copies.attribute(name, f"args.{name}", trainer.args)

    def _set_learning_rate_multiplier(self, multiplier: float) -> None:
        self._learning_rate_multiplier = float(multiplier)
        if self.learning_rate_scale is not None:
            self.learning_rate_scale.multiplier = self._learning_rate_multiplier

    def _scale_learning_rate(self) -> None:
        """Hook the multiplier onto the optimizer transformers built for this train() (once per optimizer)."""
        optimizer = getattr(self.trainer, "optimizer", None)
        if optimizer is None or (self.learning_rate_scale is not None
                                 and self.learning_rate_scale.optimizer is optimizer):
            return
        if self.learning_rate_scale is not None:
            self.learning_rate_scale.remove()
        self.learning_rate_scale = LearningRateScale(optimizer, self._learning_rate_multiplier)

    def _detach_hyperparameters(self) -> None:
        """The optimizer's own step back, and the measuring callback removed."""
        if self.learning_rate_scale is not None:
            self.learning_rate_scale.remove()
            self.learning_rate_scale = None
        if self.step_measurements is not None:
            self.trainer.remove_callback(self.step_measurements)


def configured_value(trainer, name: str) -> float:
    """The value the loss reads when metahp does not set it (the learning-rate multiplier: 1)."""
    if name == "learning_rate":
        return KNOBS[name].off_value
    return float(getattr(trainer, trl_compat.RUN_TIME_HYPERPARAMETERS[name][0]))


def check_hyperparameter(trainer, knob: str) -> None:
    """What a hyperparameter needs of the run, refused at attach: a reference model for beta, a clipped loss for
    epsilon, an optimizer metahp can scale for the learning rate."""
    args = trainer.args
    if knob == "beta" and float(trainer.beta) == 0.0:
        raise ConfigError("adapting beta needs a reference model, which TRL builds only when GRPOConfig.beta > 0 at "
                          "start-up (beta = 0 builds none and skips the reference log-probs); set beta > 0 in "
                          "GRPOConfig (e.g. 0.04). A candidate beta of 0 then switches the KL term off for a batch.")
    if knob in ("epsilon", "epsilon_high") and getattr(args, "loss_type", "grpo") not in trl_compat.CLIPPED_LOSSES:
        raise ConfigError(f"loss_type={args.loss_type!r} does not clip the ratio to [1 - epsilon, 1 + epsilon_high], "
                          f"so {knob} means something else there (or nothing); adapt {knob} with a clipped loss "
                          f"{list(trl_compat.CLIPPED_LOSSES)}.")
    if knob == "learning_rate" and getattr(trainer, "is_deepspeed_enabled", False):
        raise ConfigError("adapting the learning rate with DeepSpeed is not supported: DeepSpeed steps its own "
                          "optimizer and scheduler inside the engine, where metahp's multiplier does not reach. Use "
                          "FSDP or plain DDP, or leave learning_rate out of knob=.")


def _step_measurements(trainer, names: list[str]):
    """A TrainerCallback that, at the end of every optimizer step, appends to ``pending[name]`` the mean of what TRL's
    loss logged for it during the step (``trl_1_16.LOGGED_MEASUREMENTS``; the entries since the step began)."""
    from transformers import TrainerCallback

    keys = {name: trl_compat.LOGGED_MEASUREMENTS[name] for name in names}

    class StepMeasurements(TrainerCallback):
        def __init__(self):
            self.pending: dict[str, list[float]] = {name: [] for name in names}
            self._start: dict[str, int] = {}

        def on_step_begin(self, args, state, control, **kwargs):
            logged = trl_compat.logged_training_metrics(trainer)
            self._start = {name: len(logged.get(key, ())) for name, key in keys.items()}

        def on_step_end(self, args, state, control, **kwargs):
            logged = trl_compat.logged_training_metrics(trainer)
            for name, key in keys.items():
                values = list(logged.get(key, ()))
                values = values[min(self._start.get(name, 0), len(values)):]
                if values:
                    self.pending[name].append(sum(values) / len(values))

    return StepMeasurements()


def _check_pending(saved, names: tuple[str, ...]) -> dict[str, list[float]]:
    """A saved ``measured`` entry: each measurement this adapter reads mapped to a list of finite numbers."""
    if not isinstance(saved, dict) or set(saved) != set(names) or not all(
            isinstance(v, list) and all(isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
                                        for x in v) for v in saved.values()):
        raise StateError(f"measured must map {list(names)} to lists of finite numbers (the steps' measurements since "
                         f"the last meta-update), got {saved!r:.80}.")
    return {name: [float(x) for x in saved[name]] for name in names}
