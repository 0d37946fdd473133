# Demo YOLOv6-N: detptq at W8A8 (the deployable INT8 case exported to QDQ ONNX),
# shortened so it runs in minutes on a CPU:
# 300 iterations per unit with a 10x AdaRound lr (at lr 1e-3, V moves too
# little in 300 steps to change a rounding decision).
_base_ = ['./yolov6n_demo.py', '../_base_/ptq/detptq.py']
load_from = 'checkpoints/yolov6n_demo.pth'
model_name = 'yolov6n_demo'
num_calib_images = 32
quant_cfg = dict(w_bits=8, a_bits=8)
recon_cfg = dict(iters=300, batch_size=4, lr_round=1e-2, p_search_images=4)
