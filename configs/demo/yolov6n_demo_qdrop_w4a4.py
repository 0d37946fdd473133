# Demo YOLOv6-N: qdrop at W4A4 (demo schedule: _base_/qdrop_demo.py).
_base_ = ['./_base_/qdrop_demo.py']
quant_cfg = dict(w_bits=4, a_bits=4)
