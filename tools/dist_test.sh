#!/usr/bin/env bash
# Distributed evaluation with torchrun, as mmdet's tools/dist_test.sh:
#   tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py args]
# Each rank evaluates its share of the images; mmengine collects the results.
# NNODES, NODE_RANK, MASTER_ADDR, PORT, PYTHON: see tools/dist_run.sh.
exec "$(dirname "$0")/dist_run.sh" test.py "$3" "$1" "$2" "${@:4}"
