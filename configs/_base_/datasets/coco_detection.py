# COCO 2017 detection with the official YOLO evaluation settings:
# centred letterbox to 640 (pad 114); val2017 for mAP, 256 train2017 images
# for calibration. Point it elsewhere with `--data-root DIR`.
dataset_type = 'CocoDataset'
data_root = 'data/coco/'
img_scale = (640, 640)
backend_args = None

test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='YOLOLetterbox', scale=img_scale, pad_val=114),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                    'scale_factor', 'pad_param')),
]

val_dataloader = dict(
    batch_size=8, num_workers=2, persistent_workers=False, drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root,
                 ann_file='annotations/instances_val2017.json',
                 data_prefix=dict(img='val2017/'), test_mode=True,
                 pipeline=test_pipeline, backend_args=backend_args))
test_dataloader = val_dataloader

# Unlabelled use only: the calibration loop reads the images, never the boxes.
calib_dataloader = dict(
    batch_size=8, num_workers=2, persistent_workers=False, drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root,
                 ann_file='annotations/instances_train2017.json',
                 data_prefix=dict(img='train2017/'), indices=256,
                 filter_cfg=dict(filter_empty_gt=False), test_mode=True,
                 pipeline=test_pipeline, backend_args=backend_args))

val_evaluator = dict(type='CocoMetric',
                     ann_file=data_root + 'annotations/instances_val2017.json',
                     metric='bbox', format_only=False, backend_args=backend_args)
test_evaluator = val_evaluator
