# YOLOv6-M-qa (v3.0, QARepVGGBlockV2, release 0.3.0 yolov6m_qa.pt) on COCO
# val2017, evaluated as tools/eval.py --reproduce_640_eval does for a file
# named yolov6m_qa.pt: the name is not in upstream eval_640_repro.py, so its
# 'default' entry applies (long side 640 - 2); conf 0.03, NMS IoU 0.65.
#   python tools/test.py configs/yolov6m_qa_coco.py yolov6m_qa.pth --data-root data/coco
_base_ = ['./_base_/models/yolov6_m_qa.py', './_base_/datasets/coco_detection.py',
          './_base_/default_runtime.py']
model_name = 'yolov6m_qa'
val_dataloader = dict(
    dataset=dict(pipeline=_base_.yolov6_reproduce_640_pipelines.default))
test_dataloader = val_dataloader
