#!/usr/bin/env bash
# Distributed PTQ with torchrun:  tools/dist_quantize.sh CONFIG GPUS [quantize.py args]
# Rank 0 calibrates and reconstructs on every calibration image and shares the
# quantized model with every rank; the FP and quantized evaluations are sharded.
# NNODES, NODE_RANK, MASTER_ADDR, PORT, PYTHON: see tools/dist_run.sh.
exec "$(dirname "$0")/dist_run.sh" quantize.py "$2" "$1" "${@:3}"
