"""Hook that puts the model in deploy form before testing."""
from __future__ import annotations

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from detptq.models.deploy import switch_to_deploy
from detptq.registry import HOOKS


@HOOKS.register_module()
class SwitchToDeployHook(Hook):
    """Fold RepVGG-style blocks (``switch_to_deploy``) at ``before_test``.

    Runs after the checkpoint is loaded (mmengine loads it before the test
    loop starts). Not done before validation during training, because the
    training-time branches are still needed afterwards.
    """
    priority = 'VERY_LOW'

    def before_test(self, runner) -> None:
        """Convert ``runner.model`` (unwrapping DDP-style wrappers)."""
        model = runner.model.module if is_model_wrapper(runner.model) \
            else runner.model
        switch_to_deploy(model)
        runner.logger.info('SwitchToDeployHook: model switched to deploy form')
