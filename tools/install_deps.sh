#!/usr/bin/env bash
# Install detptq's dependencies into the active Python (a venv is recommended).
# Idempotent: each step is skipped when what it installs is already present.
# Why the order matters (see README "Supported versions"):
#   * torch is installed only when missing, pinned to the CPU 2.13.0 release so
#     pip never pulls a multi-GB CUDA build; users keep their own torch.
#   * mmcv 2.1.0 has no wheels for this torch, so it is built from source with
#     its compiled ops (needs setuptools<70 for pkg_resources and the installed
#     torch, hence --no-build-isolation). pip caches the wheel afterwards.
set -euo pipefail
PY=${PYTHON:-python}
here=$(cd "$(dirname "$0")/.." && pwd)

have() { "$PY" -c "import $1" >/dev/null 2>&1; }

if ! have torch; then
  echo "[install] torch not found: installing torch==2.13.0 (CPU)"
  "$PY" -m pip install torch==2.13.0
else
  echo "[install] keeping installed torch $("$PY" -c 'import torch; print(torch.__version__)')"
fi

"$PY" -m pip install "setuptools<70" wheel ninja

if ! "$PY" -c "import mmcv, mmcv.ops; assert mmcv.__version__ == '2.1.0'" >/dev/null 2>&1; then
  echo "[install] building mmcv==2.1.0 with compiled ops (about 12 min the first time, cached after)"
  MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-2} "$PY" -m pip install --no-build-isolation mmcv==2.1.0
fi

"$PY" -m pip install -r "$here/requirements.txt"
"$PY" -m pip install --no-build-isolation --no-deps -e "$here"
"$PY" -c "import detptq, mmcv.ops; print('[install] detptq', detptq.__version__, 'ready')"
