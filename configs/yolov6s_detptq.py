# The headline run: YOLOv6-S on COCO, W4A8, DetPTQ (ODOL-guided p + QDrop),
# paper-faithful settings (256 calibration images, 20,000 iterations per unit).
#   python tools/quantize.py configs/yolov6s_detptq.py --checkpoint yolov6s.pth
_base_ = ['./yolov6s_coco.py', './_base_/ptq/detptq.py']
load_from = 'checkpoints/yolov6s.pth'
quant_cfg = dict(w_bits=4, a_bits=8)
