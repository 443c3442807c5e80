"""The installed verl has every private name metahp's verl adapter touches (integrations/verl_0_9.py), and
`import verl` loads metahp's agent loop through the `verl.plugins` entry point (as in every Ray worker)."""

from __future__ import annotations

import subprocess
import sys


def test_the_installed_verl_is_supported_and_has_every_private_name():
    from metahp.integrations import verl_0_9

    verl_0_9.check_version()
    assert verl_0_9.missing_names() == []
    assert verl_0_9.missing_v1_names() == []  # the v1 trainer's (verl 0.9's default) and TransferQueue's
    assert verl_0_9.v1_trainer_class("sync").__name__ == "PPOTrainerSync"


def test_import_verl_registers_metahps_agent_loop_in_a_fresh_process():
    # a fresh interpreter, as a Ray worker starts: only `import verl`, nothing of metahp imported by hand
    code = ("import verl, sys; from verl.experimental.agent_loop.agent_loop import _agent_loop_registry as r; "
            "print(r.get('metahp_sampling', {}).get('_target_'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "metahp.integrations.verl_agent_loop.MetahpSamplingAgentLoop"
