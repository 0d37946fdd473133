#!/usr/bin/env bash
# Distributed PTQ with torchrun, as mmdet's tools/dist_train.sh:
#   tools/dist_quantize.sh CONFIG GPUS [quantize.py args]
# Rank 0 calibrates and reconstructs on every calibration image and shares the
# quantized model with every rank; the FP and quantized evaluations are sharded.
# Multi-node: NNODES, NODE_RANK, MASTER_ADDR, PORT (as mmdet). PYTHON picks the interpreter.
CONFIG=$1
GPUS=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}

PYTHONPATH="$(dirname "$0")/..":$PYTHONPATH \
${PYTHON:-python} -m torch.distributed.run \
    --nnodes=$NNODES \
    --node_rank=$NODE_RANK \
    --master_addr=$MASTER_ADDR \
    --nproc_per_node=$GPUS \
    --master_port=$PORT \
    "$(dirname "$0")/quantize.py" \
    "$CONFIG" \
    --launcher pytorch "${@:3}"
