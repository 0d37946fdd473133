# Runtime shared by every detptq config.
default_scope = 'detptq'
# importing detptq registers our models, transforms, hooks and loops and
# routes mmengine checkpoint loading through detptq's safe loader
custom_imports = dict(imports=['detptq'], allow_failed_imports=False)

val_cfg = dict(type='ValLoop')
# No test_cfg here: a PTQ config lists a method file (configs/_base_/ptq/, which
# declares test_cfg = dict(type='PTQLoop')) next to its model config, and mmengine
# refuses a key that two files of one _base_ list define. The tools run mmengine's
# TestLoop for a config that declares no test loop (engine/config_utils.load_config).

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=20),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=3,
                    save_best='auto'),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='DetVisualizationHook'))

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    # nccl on GPUs, as mmdet; without CUDA detptq.utils.distributed uses gloo (and says so)
    dist_cfg=dict(backend='nccl'))

vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='DetLocalVisualizer', vis_backends=vis_backends,
                  name='visualizer')
log_processor = dict(type='LogProcessor', window_size=20, by_epoch=True)
log_level = 'INFO'
load_from = None
resume = False
