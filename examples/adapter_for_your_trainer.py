"""metahp on a trainer it does not own: a minimal adapter built on the adapter kit, checked by check_adapter.

    .venv/bin/python examples/adapter_for_your_trainer.py          # or --steps 3 for a smoke run

`TinyGRPO` stands for someone else's GRPO loop: it knows nothing of metahp. It samples with transformers'
`generate` at `self.generation_config` and divides its loss's logits by `self.temperature`. The adapter below says
where those two copies live, draws a value before each step, captures every candidate's likelihood while
`generate` samples (no extra forward), and updates from the step's advantages. Values, history, state and the
checks come from `metahp.integrations.kit`. Then `metahp.testing.check_adapter` drives it: every completion scored
at the value it was sampled at, resume into the same next draw, no extra forward, detach gives the user's value
back.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch
from metahp.integrations import kit
from metahp.integrations.capture import capturing, sequence_logprobs
from transformers import GenerationConfig

from metahp.errors import ConfigError
from metahp.knobset import KnobSet
from metahp.lab.models import char_tokenizer, tiny_model
from metahp.testing import check_adapter


@dataclass
class Args:
    steps: int = 20  # training steps (one generation batch each)
    group: int = 4  # completions per prompt
    seed: int = 0


# -- someone else's trainer ---------------------------------------------------------------------------------------
class TinyGRPO:
    """A bare GRPO loop over two-digit additions: reward 1 for a completion that starts with the right last digit."""

    def __init__(self, model, tokenizer, *, temperature: float = 1.0, group: int = 4, seed: int = 0):
        torch.manual_seed(seed)
        self.model, self.tokenizer, self.group, self.temperature = model, tokenizer, group, temperature
        self.generation_config = GenerationConfig(do_sample=True, temperature=temperature, top_k=0, max_new_tokens=3,
                                                  pad_token_id=tokenizer.pad_token_id)
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
        self.prompts = [f"{a}+{b}=" for a in range(1, 5) for b in range(5, 9)]
        self.steps = 0

    def step(self) -> dict:
        prompts = [self.prompts[(self.steps + i) % len(self.prompts)] for i in range(2) for _ in range(self.group)]
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True)
        self.model.eval()
        with torch.no_grad():
            out = self.model.generate(**enc, generation_config=self.generation_config)
        completion = out[:, enc["input_ids"].size(1):]
        mask = (completion != self.tokenizer.pad_token_id).long()
        answers = [str(sum(map(int, p[:-1].split("+"))))[-1] for p in prompts]
        texts = self.tokenizer.batch_decode(completion, skip_special_tokens=True)
        rewards = torch.tensor([float(t[:1] == a) for t, a in zip(texts, answers, strict=True)])
        grouped = rewards.view(-1, self.group)
        advantages = ((grouped - grouped.mean(1, keepdim=True)) / (grouped.std(1, keepdim=True) + 1e-4)).view(-1)
        self.model.train()
        logits = self.model(out, attention_mask=torch.cat([enc["attention_mask"], mask], 1)).logits
        logp = torch.log_softmax(logits[:, enc["input_ids"].size(1) - 1:-1] / self.temperature, -1)
        token_logp = logp.gather(-1, completion.unsqueeze(-1)).squeeze(-1)
        loss = -(advantages * (token_logp * mask).sum(1) / mask.sum(1).clamp(min=1)).mean()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.steps += 1
        return {"completion_mask": mask, "advantages": advantages, "rewards": rewards}


# -- the adapter: the whole of what metahp needs to know about TinyGRPO --------------------------------------------
class TinyGRPOAdapter(kit.KitAdapter):
    who = "TinyGRPO adapter"

    def __init__(self, trainer, *, knob="temperature", updater="exp3", values=None, seed=0, per="batch", **options):
        knobset = KnobSet(knob, updater, values, seed, supported=["temperature"], who="TinyGRPO", per=per,
                          group_size=trainer.group, **options)
        if knobset.per != "batch":
            raise ConfigError("TinyGRPO samples one temperature per batch: use per='batch'.")
        super().__init__(knobset, {"temperature": trainer.temperature})
        self.trainer, self._step, self.metrics = trainer, trainer.step, {}
        self.copies.attribute("temperature", "trainer.temperature", trainer)  # the loss divides by it
        self.copies.attribute("temperature", "generation_config.temperature", trainer.generation_config)  # sampling
        trainer.step = self.step

    def step(self) -> dict:
        self.draw_and_apply(self.trainer.steps)
        if not self.knobset.needs_likelihoods:  # a bandit: the mean reward is all it reads
            batch = self._step()
            self.metrics = self.knobset.update(advantages=batch["advantages"], reward=float(batch["rewards"].mean()))
            return batch
        with capturing(self.trainer.model, self.knobset.scoring_knobs(self._current)) as captured:
            batch = self._step()
        logp = sequence_logprobs(captured.per_token, batch["completion_mask"])
        self.metrics = self.knobset.update(logp, batch["advantages"], used=self._current)
        return batch

    def detach(self) -> None:
        del self.trainer.step
        super().detach()
# -- end of the adapter ---------------------------------------------------------------------------------------------


def make_trainer(seed: int = 0, group: int = 4) -> TinyGRPO:
    tokenizer = char_tokenizer("0123456789+=")
    model = tiny_model(tokenizer, hidden=32, layers=1, heads=2, seed=seed)
    with torch.no_grad():  # a random init is near-uniform: make the temperature matter
        model.lm_head.weight.mul_(4.0)
    return TinyGRPO(model, tokenizer, temperature=0.9, group=group, seed=seed)


def run(trainer: TinyGRPO, steps: int) -> None:
    for _ in range(steps):
        trainer.step()


def attach(trainer, **settings) -> TinyGRPOAdapter:
    return TinyGRPOAdapter(trainer, **settings)


def main(args: Args) -> None:
    trainer = make_trainer(args.seed, args.group)
    adapter = attach(trainer, updater="tampo", values=[0.5, 0.9, 1.5], seed=args.seed)
    run(trainer, args.steps)
    print(f"after {args.steps} steps: temperature drawn last {adapter.value}, probabilities "
          f"{ {v: round(float(p), 3) for v, p in zip(adapter.policy.values, adapter.policy.probs, strict=True)} }")
    check_adapter(make_trainer, run, attach=attach, modes=("batch",))
    print("check_adapter: sampled as scored, resumes into the same draw, no extra forward, detach restores: passed")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, value in vars(Args()).items():
        parser.add_argument(f"--{name}", type=type(value), default=value)
    main(Args(**vars(parser.parse_args())))
