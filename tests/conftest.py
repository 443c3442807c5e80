import os

import torch
from hypothesis import HealthCheck, settings

# Two CI cores are shared by pytest-xdist workers: one thread each avoids oversubscription.
torch.set_num_threads(1)

settings.register_profile("dev", max_examples=50, deadline=None)
settings.register_profile("ci", max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))
