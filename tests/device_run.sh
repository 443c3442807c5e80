#!/usr/bin/env bash
# The one GPU check of issue 14, as it was run on the lent H200 (torch 2.11 + CUDA, transformers 5.17, Python 3.12):
# carry .whl (trl, datasets, pydantic, ... for cp312) and .whl_pa (pyarrow, installed only if the machine's is older
# than datasets needs). Not part of the test suite; results land in $OUT.
set -o pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/device-out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
python3 -c "import pyarrow, sys; sys.exit(int(pyarrow.__version__.split('.')[0]) < 24)" 2>/dev/null \
  || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl_pa/*.whl
export PYTHONPATH=/tmp/site:$PWD
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import sys, torch, transformers, trl, datasets, pyarrow, pydantic; print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__, 'trl', trl.__version__, 'datasets', datasets.__version__, 'pyarrow', pyarrow.__version__)"
} 2>&1 | tee "$OUT/env.txt"
timeout 200 python3 tests/device_check.py --out "$OUT" 2>&1 | tee "$OUT/device_check.log"
echo "device_check rc=$?" | tee -a "$OUT/env.txt"
METAHP_TEST_DEVICE=cuda timeout 280 python3 -m pytest -q -p no:cacheprovider -n 4 --dist loadfile -k "not two_process" \
  tests/test_devices.py tests/test_trl_adapter.py tests/test_trl_truncation.py tests/test_bad_input.py tests/test_state.py \
  -rfE 2>&1 | tee "$OUT/pytest_cuda.log" | tail -40
echo "pytest rc=$?" | tee -a "$OUT/env.txt"
