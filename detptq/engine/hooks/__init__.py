"""Runner hooks; importing registers them in detptq.registry.HOOKS."""
from .switch_to_deploy_hook import SwitchToDeployHook

__all__ = ['SwitchToDeployHook']
