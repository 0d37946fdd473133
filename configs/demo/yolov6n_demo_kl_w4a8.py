# Demo YOLOv6-N: kl PTQ at W4A8.
_base_ = ['./_base_/ptq_demo.py', '../_base_/ptq/kl.py']
quant_cfg = dict(w_bits=4, a_bits=8)
