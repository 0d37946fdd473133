# Demo YOLOv6-N: kl_cfws PTQ at W4A8.
_base_ = ['./_base_/ptq_demo.py', '../_base_/ptq/kl_cfws.py']
quant_cfg = dict(w_bits=4, a_bits=8)
