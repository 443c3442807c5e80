"""The probe that explained top_k's one CPU/CUDA difference in device_check.json (output: probe.txt).

Run on the GPU machine from the repository root, with metahp importable: python benchmarks/results/device/topk_probe.py
"""

import sys

import torch

sys.path[:0] = ["tests", "."]
import device_check as dc  # noqa: E402

from metahp.knobs import TopK  # noqa: E402
from metahp.knobs.truncation import RowStats  # noqa: E402

logits, tokens, mask = dc.make_batch(torch, 8, 32, 49152, 0)
knob = TopK(temperature=1.3)
rows, taken = logits[mask], tokens[mask]
cpu = knob.token_logprobs(rows, taken).double()
dev = torch.device("cuda")
d1 = knob.token_logprobs(rows.to(dev), taken.to(dev)).cpu().double()
d2 = knob.token_logprobs(rows.to(dev), taken.to(dev)).cpu().double()
print("device repeat identical:", torch.equal(d1, d2))
f = torch.isfinite(cpu) & torch.isfinite(d1)
diff = torch.where(f, (cpu - d1).abs(), torch.zeros_like(cpu))
print("max diff per candidate", diff.max(0).values.tolist())
r, k = divmod(int(diff.argmax()), cpu.shape[1])
print("worst row", r, "candidate", knob.values[k], "cpu", cpu[r].tolist(), "dev", d1[r].tolist())
single = knob.token_logprobs(rows[r:r + 1].to(dev), taken[r:r + 1].to(dev)).cpu().double()
print("device single row", single.tolist())
for where, z, t in (("cpu", rows[r:r + 1], taken[r:r + 1]), ("dev", rows[r:r + 1].to(dev), taken[r:r + 1].to(dev))):
    st = RowStats(z.float(), t, 1.3)
    mass, weight = knob.support(st)
    top = torch.sort(st.scaled, descending=True).values[0]
    kk = knob.values[k]
    print(where, "mass", mass.cpu().tolist(), "weight", weight.cpu().tolist(), "kth", top[kk - 2:kk + 2].cpu().tolist(),
          "taken", st.taken.cpu().tolist(), "rowmax", st.row_max.cpu().tolist(), "pmax", st.prob_max.cpu().tolist(),
          "ptotal", st.prob_total.cpu().tolist())
