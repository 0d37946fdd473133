#!/usr/bin/env bash
# Run a detptq tool under torchrun, as mmdet's dist_train.sh / dist_test.sh do:
#   tools/dist_run.sh TOOL.py GPUS [tool args]     (tools/dist_test.sh, tools/dist_quantize.sh)
# Multi-node: NNODES, NODE_RANK, MASTER_ADDR, PORT (as mmdet). PYTHON picks the interpreter.
TOOL=$1
GPUS=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}

PYTHONPATH="$(dirname "$0")/..":$PYTHONPATH \
exec ${PYTHON:-python} -m torch.distributed.run \
    --nnodes=$NNODES \
    --node_rank=$NODE_RANK \
    --master_addr=$MASTER_ADDR \
    --nproc_per_node=$GPUS \
    --master_port=$PORT \
    "$(dirname "$0")/$TOOL" \
    "${@:3}" \
    --launcher pytorch
