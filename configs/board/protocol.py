# Board protocol on the demo YOLOv6-N (README "Benchmark protocol",
# docs/detptq_study.md). Inherited by every configs/board/<method>.py;
# tools/run_board.py sets bits and seed per run through --cfg-options:
#   quant_cfg.w_bits / quant_cfg.a_bits, calib_seed (which 128 of the 256
#   calibration images), recon_cfg.seed (rounding init order, QDrop masks,
#   batch sampling) and randomness.seed.
_base_ = ['../demo/yolov6n_demo.py']
load_from = 'checkpoints/yolov6n_demo.pth'
model_name = 'yolov6n_demo'
calib_seed = 0
# read by the method configs as num_calib_images (a key of the ptq bases too)
board_num_calib_images = 128
# One reconstruction schedule for every method (AdaRound, BRECQ, QDrop,
# DetPTQ): at least 1000 iterations per unit, one learning rate for all,
# chosen on the tune split (`tools/run_board.py --study lr`,
# results/lr_study_choice.md: 1e-1 has the best mean W4A4 mAP of the four
# methods, 0.516 vs 0.512 at 3e-2). The loss is recorded every 25 iterations
# (recon/loss_curves.json) to check the plateau.
board_recon = dict(iters=1000, batch_size=4, lr_round=1e-1, lr_act=4e-5, seed=0,
                   loss_curve_every=25, progress=False)
