# The generated demo data set (detptq.datasets.demo_data): 10 look-alike
# shape classes at 320 px. The tools read data_root 'data/demo/' as
# $DETPTQ_DEMO_DATA when that is set, and generate the set there on first use;
# a --data-root you give is never generated into (tools/make_demo_data.py does
# that). `demo_data` holds the generator settings.
# Splits: train, val (reported mAP), calib (calibration images) and tune
# (choose hyper-parameters here, never on val): evaluate on tune with
# `--cfg-options eval_split=tune`.
dataset_type = 'CocoDataset'
data_root = 'data/demo/'
img_scale = (320, 320)
backend_args = None
classes = ('square', 'rectangle', 'disc', 'ring', 'triangle', 'arrowhead',
           'plus', 'x_cross', 'star', 'hexagon')  # = demo_data.DEMO_CLASSES
metainfo = dict(classes=classes)
# num_tune (the tune split's size) defaults to num_val; not set here, so a
# config that shrinks num_val shrinks the tune split with it.
demo_data = dict(seed=0, num_train=4000, num_val=500, num_calib=256,
                 img_size=320)
eval_split = 'val'  # or 'tune': test_dataloader/test_evaluator become the tune ones

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True),
    # HSV before the flip: the flip returns a non-contiguous view that
    # OpenCV 5's cvtColor(dst=...) rejects
    dict(type='YOLOXHSVRandomAug'),
    dict(type='RandomFlip', prob=0.5),
    dict(type='YOLOLetterbox', scale=img_scale, pad_val=114),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1, 1), keep_empty=False),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='YOLOLetterbox', scale=img_scale, pad_val=114),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                    'scale_factor', 'pad_param')),
]

train_dataloader = dict(
    batch_size=16, num_workers=1, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    batch_sampler=dict(type='AspectRatioBatchSampler'),
    dataset=dict(type=dataset_type, data_root=data_root, metainfo=metainfo,
                 ann_file='annotations/instances_train.json',
                 data_prefix=dict(img='images/train/'),
                 filter_cfg=dict(filter_empty_gt=False, min_size=1),
                 pipeline=train_pipeline, backend_args=backend_args))
val_dataloader = dict(
    batch_size=8, num_workers=1, persistent_workers=False, drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root, metainfo=metainfo,
                 ann_file='annotations/instances_val.json',
                 data_prefix=dict(img='images/val/'), test_mode=True,
                 pipeline=test_pipeline, backend_args=backend_args))
test_dataloader = val_dataloader
# Calibration images; the PTQ loop reads only the images.
calib_dataloader = dict(
    batch_size=8, num_workers=1, persistent_workers=False, drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root, metainfo=metainfo,
                 ann_file='annotations/instances_calib.json',
                 data_prefix=dict(img='images/calib/'), test_mode=True,
                 pipeline=test_pipeline, backend_args=backend_args))

val_evaluator = dict(type='CocoMetric',
                     ann_file=data_root + 'annotations/instances_val.json',
                     metric='bbox', format_only=False, backend_args=backend_args)
test_evaluator = val_evaluator
# The tune split (same size as val, its own images) for hyper-parameter choice.
tune_dataloader = dict(
    val_dataloader, dataset=dict(val_dataloader['dataset'],
                                 ann_file='annotations/instances_tune.json',
                                 data_prefix=dict(img='images/tune/')))
tune_evaluator = dict(val_evaluator,
                      ann_file=data_root + 'annotations/instances_tune.json')
