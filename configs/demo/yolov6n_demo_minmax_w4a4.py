# Demo YOLOv6-N: minmax PTQ at W4A4.
_base_ = ['./_base_/ptq_demo.py', '../_base_/ptq/minmax.py']
quant_cfg = dict(w_bits=4, a_bits=4)
