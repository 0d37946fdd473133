"""Runner hooks; importing registers them in detptq.registry.HOOKS."""
from .quant_wrapper_hook import QuantWrapperHook
from .strict_load_hook import CheckpointMismatchError, StrictLoadCheckpointHook
from .switch_to_deploy_hook import SwitchToDeployHook

__all__ = ['CheckpointMismatchError', 'QuantWrapperHook', 'StrictLoadCheckpointHook',
           'SwitchToDeployHook']
