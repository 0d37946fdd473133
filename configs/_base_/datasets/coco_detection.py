# COCO 2017 detection: val2017 for mAP, 256 train2017 images for
# calibration. Point it elsewhere with `--data-root DIR`.
#
# Three test pipelines / loaders (the top-level COCO configs pick their
# family's official one; the README model table says which):
# * `test_pipeline` (default, also calibration): detptq's square letterbox to
#   640 (one resize, sizes rounded, pad 114), batches of 8;
# * `yolov6_reproduce_640_pipelines[name]`: YOLOv6 `tools/eval.py
#   --reproduce_640_eval` (the published YOLOv6 table): square 640 canvas,
#   long side resized to 640 - shrink_size with int() truncation (shrink per
#   weights name as upstream configs/experiment/eval_640_repro.py), no rect
#   batches, boxes mapped back as YOLOv6's evaler does;
# * `yolov6_rect_dataloader` / `yolov7_rect_dataloader`: rect mode (YOLOv6
#   eval.py default `infer_on_rect`, YOLOv7 test.py `rect=True`): long side
#   640 (int()), batches of 32 of similar aspect ratio in the official order,
#   each padded to ceil(shape * 640 / 32 + 0.5) * 32.
dataset_type = 'CocoDataset'
data_root = 'data/coco/'
img_scale = (640, 640)
backend_args = None

load_image = dict(type='LoadImageFromFile', backend_args=backend_args)
load_annotations = dict(type='LoadAnnotations', with_bbox=True)
pack_inputs = dict(type='PackDetInputs',
                   meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                              'scale_factor', 'pad_param'))

test_pipeline = [
    load_image,
    dict(type='YOLOLetterbox', scale=img_scale, pad_val=114),
    load_annotations,
    pack_inputs,
]


def _reproduce_640(shrink_size):
    """YOLOv6 --reproduce_640_eval: square 640, long side 640 - shrink_size."""
    return [
        load_image,
        dict(type='YOLOLetterbox', scale=img_scale, pad_val=114,
             resize_mode='official', shrink_size=shrink_size, unmap='yolov6'),
        load_annotations,
        pack_inputs,
    ]


# keyed as upstream configs/experiment/eval_640_repro.py (by weights file
# name; any other name, e.g. yolov6n_qa, gets 'default')
yolov6_reproduce_640_pipelines = dict(
    yolov6n=_reproduce_640(4), yolov6t=_reproduce_640(6),
    yolov6s=_reproduce_640(6), yolov6m=_reproduce_640(4),
    yolov6l=_reproduce_640(4), default=_reproduce_640(2))
del _reproduce_640

val_dataloader = dict(
    batch_size=8, num_workers=2, persistent_workers=False, drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root,
                 ann_file='annotations/instances_val2017.json',
                 data_prefix=dict(img='val2017/'), test_mode=True,
                 pipeline=test_pipeline, backend_args=backend_args))
test_dataloader = val_dataloader


def _rect_dataloader(family):
    """Official rect evaluation of `family` ('yolov6' / 'yolov7')."""
    return dict(
        batch_size=32, num_workers=2, persistent_workers=False,
        drop_last=False,
        sampler=dict(type='DefaultSampler', shuffle=False),
        batch_sampler=dict(type='YOLORectBatchSampler'),
        dataset=dict(
            type='YOLORectCocoDataset', data_root=data_root,
            ann_file='annotations/instances_val2017.json',
            data_prefix=dict(img='val2017/'), test_mode=True,
            batch_shapes_cfg=dict(type='YOLOBatchShapePolicy', batch_size=32,
                                  img_size=640, stride=32, pad=0.5,
                                  family=family),
            pipeline=[
                load_image,
                dict(type='YOLOLetterbox', scale=img_scale, pad_val=114,
                     resize_mode='official', unmap=family),
                load_annotations,
                pack_inputs,
            ],
            backend_args=backend_args))


yolov6_rect_dataloader = _rect_dataloader('yolov6')
yolov7_rect_dataloader = _rect_dataloader('yolov7')
del _rect_dataloader

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
