# Demo YOLOv6-N: brecq at W4A4, shortened so it runs in minutes on a CPU
# (the COCO configs keep the paper's 20,000 iterations per unit).
_base_ = ['./yolov6n_demo.py', '../_base_/ptq/brecq.py']
load_from = 'checkpoints/yolov6n_demo.pth'
model_name = 'yolov6n_demo'
num_calib_images = 32
quant_cfg = dict(w_bits=4, a_bits=4)
recon_cfg = dict(iters=100, batch_size=4)
