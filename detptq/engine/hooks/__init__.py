"""Runner hooks; importing registers them in detptq.registry.HOOKS."""
from .quant_wrapper_hook import QuantWrapperHook
from .switch_to_deploy_hook import SwitchToDeployHook

__all__ = ['QuantWrapperHook', 'SwitchToDeployHook']
