# A short from-scratch schedule for small YOLO models on CPU (demo models).
# AdamW converges faster than the official 300-epoch SGD recipe when only
# ~8-12 epochs fit in the time budget on a 2-core CPU.
max_epochs = 5
base_lr = 0.002
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs,
                 val_interval=1)

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=base_lr, weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0),
    clip_grad=dict(max_norm=10.0))

param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
         end=300),
    dict(type='CosineAnnealingLR', eta_min=base_lr * 0.05, begin=1,
         end=max_epochs, T_max=max_epochs - 1, by_epoch=True,
         convert_to_iter_based=True),
]

custom_hooks = [
    dict(type='EMAHook', ema_type='ExpMomentumEMA', momentum=0.0002,
         update_buffers=True, priority=49),
]
