"""Two CPU processes (gloo) train one GRPOTrainer with metahp; each rank writes what its meta-policy did.

    .venv/bin/accelerate launch --num_processes 2 --cpu tests/trl_two_process.py OUT_DIR MODE

MODE: forward, generate, completion or prompt.

Run by tests/test_trl_adapter.py::test_two_processes_make_the_same_choices (likelihoods from generate or a forward)
and tests/test_trl_per_completion.py (values per completion and per prompt), which compare the ranks' files.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import torch

_spec = importlib.util.spec_from_file_location("trl_tiny", Path(__file__).with_name("trl_tiny.py"))
trl_tiny = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(trl_tiny)


def main(out_dir: str, mode: str) -> None:
    import metahp

    torch.set_num_threads(1)
    trainer = trl_tiny.grpo_trainer(out_dir, max_steps=3)
    if mode == "completion":  # values per completion: each rank samples its slice of the global rows
        adapter = metahp.adapt(trainer, per="completion", updater="softmax_gradient", reward="informativeness",
                               values=[0.5, 1.0, 2.0], lr=5.0)
    elif mode == "prompt":  # values per prompt: every rank reads the whole batch's prompts (gathered)
        from metahp.knobset import prompt_context

        adapter = metahp.adapt(trainer, per="prompt", updater="softmax_gradient", reward="informativeness",
                               values=[0.5, 1.0, 2.0], lr=5.0, context=prompt_context(
                                   lambda p: "small" if int(p[0]) < 5 else "large", labels=("small", "large")))
    else:
        adapter = metahp.adapt(trainer, updater="tampo", values=[0.5, 1.0, 2.0], nucleus_p=1.0, likelihoods=mode)
    updates, local_rows = [], []

    def spied(update):
        def spy(logp=None, advantages=None, **kwargs):
            updates.append({"rows": len(advantages), "batch_size": kwargs.get("batch_size")})
            return update(logp, advantages, **kwargs)
        return spy

    for policy in adapter.knobset.policies.values():
        policy.update = spied(policy.update)
    generate = trainer.model.generate

    def counting_generate(*args, **kwargs):
        local_rows.append(int(kwargs["input_ids"].size(0)))
        return generate(*args, **kwargs)

    trainer.model.generate = counting_generate
    trainer.train()
    rank = trainer.accelerator.process_index
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps({
        "world": trainer.accelerator.num_processes, "history": adapter.history, "updates": updates,
        "state": adapter.knobset.state_dict(), "source": adapter.likelihood_source, "local_rows": local_rows}))
    # A rank sometimes aborted during interpreter teardown, after its work and its JSON were done
    # ("terminate called without an active exception": a C++ thread destroyed at exit; seen intermittently in
    # clean-clone CI runs under load). Tear gloo down, then leave without running the exit handlers.
    trainer.accelerator.wait_for_everyone()
    torch.distributed.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "auto")
