# Demo YOLOv6-N: detptq at W4A4 (demo schedule: _base_/detptq_demo.py).
_base_ = ['./_base_/detptq_demo.py']
quant_cfg = dict(w_bits=4, a_bits=4)
