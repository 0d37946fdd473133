# Demo YOLOv6-N: detptq at W8A8, the deployable INT8 case exported to QDQ ONNX
# (demo schedule: _base_/detptq_demo.py).
_base_ = ['./_base_/detptq_demo.py']
quant_cfg = dict(w_bits=8, a_bits=8)
