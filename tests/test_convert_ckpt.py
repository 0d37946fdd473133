"""tools/convert_ckpt.py: official YOLOv6/YOLOv7 pickled releases and mmyolo
state dicts -> plain detptq checkpoints, every key accounted for, identical
outputs; wrong-model files and code-carrying pickles are refused clearly."""
import argparse
import importlib.util
import os
import sys

import numpy as np
import pytest
import torch
from mmengine.runner.checkpoint import load_checkpoint
from torch import nn

import official_yolo_fakes as fakes
from detptq.models.converters import ConversionError, convert_checkpoint
from detptq.models.converters.mmyolo import map_mmyolo
from helpers import MODEL_CFG_DIR
from helpers import build_model as build_base_model

YOLOV7_TINY_ANCHORS = [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119],
                       [116, 90, 156, 198, 373, 326]]
YOLOV7_ANCHORS = [[12, 16, 19, 36, 40, 28], [36, 75, 76, 55, 72, 146],
                  [142, 110, 192, 243, 459, 401]]
X = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))


def cfg_path(name: str) -> str:
    return os.path.join(MODEL_CFG_DIR, name + '.py')


def small_l_config(tmp_path) -> str:
    """A config file: the YOLOv7 layout at 1/16 width (fast, every layer kept)."""
    path = tmp_path / 'yolov7_small.py'
    path.write_text(
        f"_base_ = {os.path.abspath(cfg_path('yolov7'))!r}\n"
        f"model = dict(backbone=dict(widen_factor=1 / 16),\n"
        f"             neck=dict(in_channels=[32, 64, 64], out_channels=[8, 16, 32]),\n"
        f"             bbox_head=dict(in_channels=[16, 32, 64]))\n")
    return str(path)


def load_converted(config: str, path: str, deploy: bool = False) -> nn.Module:
    """Build the config's model and load the converted file the mmengine way."""
    from detptq.models.converters import build_model
    model = build_model(config)
    if deploy:
        model.switch_to_deploy()
    load_checkpoint(model, path, map_location='cpu', strict=True)
    return model.eval()


def outputs(model: nn.Module):
    with torch.no_grad():
        cls, box = model(X, mode='tensor')
    return cls + box


def assert_same(a, b, tol=1e-5):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.shape == y.shape and (x - y).abs().max().item() < tol


def assert_not_importable(*packages):
    for pkg in packages:
        assert pkg not in sys.modules and importlib.util.find_spec(pkg) is None


# --------------------------------------------------------------- YOLOv7
@torch.no_grad()
def fuse_official_repconvs(off: nn.Module) -> None:
    """Official deploy form: RepConv branches replaced by one ``rbr_reparam`` conv."""
    from detptq.models.layers.rep_blocks import fold_bn
    for m in off.modules():
        if type(m).__name__ == 'RepConv':
            k3, b3 = fold_bn(m.rbr_dense[0].weight, None, m.rbr_dense[1])
            k1, b1 = fold_bn(m.rbr_1x1[0].weight, None, m.rbr_1x1[1])
            conv = nn.Conv2d(k3.shape[1], k3.shape[0], 3, 1, 1)
            conv.weight.copy_(k3 + nn.functional.pad(k1, [1, 1, 1, 1]))
            conv.bias.copy_(b3 + b1)
            del m.rbr_dense, m.rbr_1x1, m.rbr_identity
            m.rbr_reparam = conv


def save_official_yolov7(path, arch: str, implicit: bool = True, seed: int = 0,
                         with_ema: bool = False, fused: bool = False):
    """Write an official-format YOLOv7 .pt (whole FP16 model); return reference maps."""
    fakes.install_fake_yolov7()
    if arch == 'tiny':
        off = fakes.Model(fakes.YOLOV7_TINY_LAYERS, fakes.YOLOV7_TINY_DETECT_FROM,
                          80, YOLOV7_TINY_ANCHORS, act=nn.LeakyReLU(0.1),
                          implicit=implicit)
    else:
        off = fakes.Model(fakes.YOLOV7_L_LAYERS, fakes.YOLOV7_L_DETECT_FROM, 80,
                          YOLOV7_ANCHORS, width=1 / 16, implicit=implicit)
    fakes.randomize_(off.eval(), seed)
    if fused:
        fuse_official_repconvs(off)
    off.half().float()  # the reference sees the FP16-rounded weights
    with torch.no_grad():
        ref = off(X)
    # as official releases: numpy fitness and the argparse options ride along
    ckpt = {'model': off.half(), 'optimizer': None, 'training_results': None,
            'epoch': -1, 'best_fitness': np.float64(0.51),
            'opt': argparse.Namespace(img_size=[640, 640])}
    if with_ema:  # official loaders prefer 'ema': make it the reference
        ema = fakes.randomize_(fakes.Model(
            fakes.YOLOV7_TINY_LAYERS, fakes.YOLOV7_TINY_DETECT_FROM, 80,
            YOLOV7_TINY_ANCHORS, act=nn.LeakyReLU(0.1),
            implicit=implicit).eval(), seed + 1)
        ema.half().float()
        with torch.no_grad():
            ref = ema(X)
        ckpt['ema'] = ema.half()
    torch.save(ckpt, path)
    fakes.remove_fake_modules('models')
    assert_not_importable('models')
    return ref


@pytest.fixture(scope='module')
def tiny_file(tmp_path_factory):
    """An official-format YOLOv7-tiny file (IDetect) and its reference maps."""
    path = tmp_path_factory.mktemp('tiny') / 'yolov7-tiny.pt'
    return path, save_official_yolov7(path, 'tiny')


@pytest.fixture(scope='module')
def yolov6_n():
    """A randomised YOLOv6-N (FP16-rounded weights) and its outputs."""
    return yolov6_n_reference()


@pytest.mark.parametrize('arch,implicit,with_ema', [
    ('tiny', True, False),  # training IDetect (ia/im), 'model' only
    ('tiny', False, True),  # deploy Detect (no ia/im), 'ema' preferred
    ('l', True, False),     # YOLOv7 layout at 1/16 width
    ('l-fused', True, False)])  # same, RepConv already fused (rbr_reparam)
def test_official_yolov7_converts_exactly(tmp_path, request, arch, implicit,
                                          with_ema):
    out = tmp_path / 'converted.pth'
    if (arch, implicit, with_ema) == ('tiny', True, False):
        src, ref = request.getfixturevalue('tiny_file')
    else:
        src = tmp_path / 'official.pt'
        ref = save_official_yolov7(src, arch.split('-')[0], implicit,
                                   with_ema=with_ema, fused=arch == 'l-fused')
    config = cfg_path('yolov7_tiny') if arch == 'tiny' else small_l_config(tmp_path)
    ckpt = convert_checkpoint(str(src), str(out), config=config)
    meta = ckpt['meta']
    assert meta['source_format'] == 'yolov7-official'
    assert meta['source_class'] == 'models.yolo.Model'
    assert meta['source_float_dtypes'] == ['float16']
    assert meta['weights_from'] == ('ema' if with_ema else 'model')
    assert set(meta['dropped_keys']) == {'<Detect>.anchors',
                                         '<Detect>.anchor_grid'}
    implicit_fills = [k for k in meta['filled_keys'] if 'implicit' in k]
    assert len(implicit_fills) == (0 if implicit else 6)
    assert all(v.dtype != torch.float16 for v in ckpt['state_dict'].values())
    assert meta['deploy_form'] == (arch == 'l-fused')
    model = load_converted(config, str(out), deploy=meta['deploy_form'])
    head = model.bbox_head
    got = fakes.official_raw_maps(head, *model(X, mode='tensor'))
    assert_same(got, ref)


def test_yolov7_without_config_guesses_tiny_and_cli_runs(tmp_path, tiny_file,
                                                         monkeypatch, capsys):
    src, out = tiny_file[0], tmp_path / 'out.pth'
    spec = importlib.util.spec_from_file_location(
        'convert_ckpt_cli',
        os.path.join(MODEL_CFG_DIR, '..', '..', '..', 'tools', 'convert_ckpt.py'))
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    monkeypatch.setattr(sys, 'argv', ['convert_ckpt.py', str(src), str(out)])
    assert cli.main() == 0
    printed = capsys.readouterr().out
    assert 'YOLOv7-tiny' in printed and 'yolov7_tiny.py' in printed
    assert os.path.isfile(out)


def test_wrong_config_gives_a_clear_error(tiny_file):
    src = tiny_file[0]
    with pytest.raises(ConversionError) as err:
        convert_checkpoint(str(src), None, config=cfg_path('yolov6_n'))
    msg = str(err.value)
    assert 'does not fit' in msg and 'YOLOv7-tiny' in msg
    assert 'model keys not in the file' in msg and 'yolov7_tiny.py' in msg
    # the first unmatched modules on both sides are named
    assert 'backbone.stem.0.conv.weight' in msg
    assert 'backbone.stem.rbr_dense.bn.{weight,bias,' in msg


def test_anchors_differing_from_the_config_are_an_error(tmp_path, tiny_file):
    config = tmp_path / 'tiny_other_anchors.py'
    config.write_text(
        f"_base_ = {os.path.abspath(cfg_path('yolov7_tiny'))!r}\n"
        "model = dict(bbox_head=dict(prior_sizes=[[(12, 16), (19, 36), (40, 28)],"
        " [(36, 75), (76, 55), (72, 146)], [(142, 110), (192, 243), (459, 401)]]))\n")
    with pytest.raises(ConversionError, match='anchors differ: file has'):
        convert_checkpoint(str(tiny_file[0]), None, config=str(config))


def test_mutated_mapping_would_be_detected(tmp_path, tiny_file):
    """The exactness checks above are sensitive: swapping two same-shaped
    ELAN branches changes the outputs."""
    (src, ref), out = tiny_file, tmp_path / 'converted.pth'
    convert_checkpoint(str(src), str(out), config=cfg_path('yolov7_tiny'))
    model = load_converted(cfg_path('yolov7_tiny'), str(out))
    elan = model.backbone.stage2[1]
    short = {k: v.clone() for k, v in elan.short_conv.state_dict().items()}
    elan.short_conv.load_state_dict(elan.main_conv.state_dict())
    elan.main_conv.load_state_dict(short)
    got = fakes.official_raw_maps(model.bbox_head, *model(X, mode='tensor'))
    assert max((a - b).abs().max().item() for a, b in zip(got, ref)) > 1e-3


# --------------------------------------------------------------- YOLOv6
def wrap_release_04(tree: nn.Module) -> None:
    """Give a 0.3-named tree the 0.4 nesting: ConvBNReLU.block, SimCSPSPPF.cspsppf."""
    names = ('ConvBNReLU', 'ConvModule', 'SimCSPSPPF', 'CSPSPPFModule')
    new_cls = {n: type(n, (nn.Module,), {}) for n in names}
    fakes._register('yolov6.layers.common', *new_cls.values())
    # 0.4 class -> (wrapper, attribute, wrapped class)
    rules = {'ConvBNAct': ('ConvBNReLU', 'block', 'ConvModule'),
             'SimCSPSPPF': ('SimCSPSPPF', 'cspsppf', 'CSPSPPFModule')}

    def visit(mod):
        for name, child in list(mod._modules.items()):
            if child is None:
                continue
            visit(child)
            rule = rules.get(type(child).__name__)
            if rule and type(child) is not new_cls[rule[0]]:
                wrapper = new_cls[rule[0]]()
                child.__class__ = new_cls[rule[2]]
                wrapper._modules[rule[1]] = child
                mod._modules[name] = wrapper

    visit(tree)


def yolov6_n_reference(seed: int = 0):
    torch.manual_seed(seed)
    model = build_base_model('yolov6_n').eval()
    fakes.randomize_(model, seed)
    model.half().float()
    return model, outputs(model)


@pytest.mark.parametrize('release', ['0.3', '0.4'])
def test_official_yolov6_converts_exactly(tmp_path, yolov6_n, release):
    model, ref = yolov6_n
    tree = fakes.stand_in_tree(model, 'yolov6', {'bbox_head': 'detect'})
    if release == '0.4':
        wrap_release_04(tree)
    # an official training-only branch (anchor-aided head) rides along
    tree.detect._modules['cls_preds_ab'] = nn.ModuleList(
        nn.Conv2d(c, 240, 1) for c in (32, 64, 128))
    src, out = tmp_path / 'yolov6n.pt', tmp_path / 'yolov6n.pth'
    torch.save({'model': tree.half(), 'ema': None, 'updates': None,
                'optimizer': None, 'epoch': -1}, src)
    fakes.remove_fake_modules('yolov6')
    assert_not_importable('yolov6')
    ckpt = convert_checkpoint(str(src), str(out))  # config guessed
    meta = ckpt['meta']
    assert meta['config'].endswith('yolov6_n.py')
    assert meta['source_format'] == f"yolov6-official-{release if release == '0.4' else '0.2/0.3'}"
    assert sorted(meta['dropped_keys']) == sorted(
        f'bbox_head.cls_preds_ab.{i}.{p}' for i in range(3)
        for p in ('weight', 'bias'))
    assert_same(outputs(load_converted(meta['config'], str(out))), ref)


def test_yolov6_file_with_a_wrong_size_config_names_the_right_model(tmp_path,
                                                                  yolov6_n):
    model, _ = yolov6_n
    tree = fakes.stand_in_tree(model, 'yolov6', {'bbox_head': 'detect'})
    src = tmp_path / 'yolov6n.pt'
    torch.save({'model': tree.half()}, src)
    fakes.remove_fake_modules('yolov6')
    with pytest.raises(ConversionError) as err:
        convert_checkpoint(str(src), None, config=cfg_path('yolov6_s'))
    msg = str(err.value)
    assert 'shape mismatches' in msg and 'YOLOv6-N (v3 layout' in msg
    assert 'yolov6_n.py' in msg


def test_code_in_a_pickle_is_refused_not_run(tmp_path):
    marker = tmp_path / 'pwned'

    class Evil:
        def __reduce__(self):
            return os.system, (f'touch {marker}',)

    src = tmp_path / 'evil.pt'
    torch.save({'model': Evil()}, src)
    with pytest.raises(ConversionError, match='refusing to load global'):
        convert_checkpoint(str(src), None)
    assert not marker.exists()


# --------------------------------------------------------------- mmyolo
def to_mmyolo_v7(state):
    """detptq YOLOv7-tiny names -> mmyolo's (TinyDownSampleBlock, convs_pred)."""
    out = {}
    for k, v in state.items():
        k = k.replace('.main_conv.', '.main_convs.0.')
        for i in (0, 1):
            k = k.replace(f'.blocks.{i}.', f'.main_convs.{i + 1}.')
        for part, idx in (('implicit_add', 0), ('conv', 1), ('implicit_mul', 2)):
            for lvl in range(3):
                k = k.replace(f'bbox_head.pred_layers.{lvl}.{part}.',
                              f'bbox_head.head_module.convs_pred.{lvl}.{idx}.')
        out[k] = v
    return out


def to_mmyolo_v6(state):
    """detptq YOLOv6 (v3, RepBlock) names -> mmyolo YOLOv6EfficientRep/RepBiPAFPN."""
    neck = {'reduce_layer0': 'reduce_layers.2', 'Rep_p4': 'top_down_layers.0.0',
            'reduce_layer1': 'top_down_layers.0.1', 'Rep_p3': 'top_down_layers.1',
            'downsample2': 'downsample_layers.0', 'Rep_n3': 'bottom_up_layers.0',
            'downsample1': 'downsample_layers.1', 'Rep_n4': 'bottom_up_layers.1'}
    out = {}
    for k, v in state.items():
        parts = k.split('.')
        if parts[0] == 'backbone' and parts[1].startswith('ERBlock_'):
            stage = int(parts[1][-1]) - 1
            if parts[2] == '2':  # SPPF: cv{j} -> conv{j}
                k = '.'.join([f'backbone.stage{stage}.1',
                              parts[3].replace('cv', 'conv')] + parts[4:])
            else:
                k = '.'.join([f'backbone.stage{stage}.0', parts[2]] + parts[3:])
        elif parts[0] == 'neck' and parts[1] in neck:
            k = '.'.join(['neck', neck[parts[1]]] + parts[2:])
        elif parts[0] == 'neck' and parts[1].startswith('Bifusion'):
            rest = '.'.join(parts[2:]).replace('upsample.upsample_transpose.',
                                               'upsample.')
            rest = rest.replace('cv1.', 'conv1.').replace('cv2.', 'conv2.') \
                .replace('cv3.', 'conv3.')
            k = f'neck.upsample_layers.{parts[1][-1]}.{rest}'
        elif parts[0] == 'bbox_head':
            if parts[1] in ('proj', 'proj_conv'):
                continue  # mmyolo computes these; the converter fills them
            k = 'bbox_head.head_module.' + '.'.join(parts[1:])
        out[k] = v
    return out


@pytest.mark.parametrize('name,to_mmyolo', [('yolov7_tiny', to_mmyolo_v7),
                                            ('yolov6_n', to_mmyolo_v6)])
def test_mmyolo_state_dict_converts_exactly(tmp_path, request, name, to_mmyolo):
    if name == 'yolov6_n':
        model, ref = request.getfixturevalue('yolov6_n')
    else:
        torch.manual_seed(0)
        model = fakes.randomize_(build_base_model(name).eval())
        ref = outputs(model)
    src, out = tmp_path / 'mmyolo.pth', tmp_path / 'converted.pth'
    torch.save({'meta': {'mmengine_version': '0.10.7'},
                'state_dict': to_mmyolo(model.state_dict())}, src)
    ckpt = convert_checkpoint(str(src), str(out), model_type='mmyolo')
    assert ckpt['meta']['source_format'].startswith('mmyolo-')
    assert ckpt['meta']['config'].endswith(name + '.py')
    assert_same(outputs(load_converted(ckpt['meta']['config'], str(out))), ref)


def test_mmyolo_bepc3_children_are_renamed():
    t = torch.zeros(1)
    state = {'backbone.stage1.0.1.conv1.conv.weight': t,
             'backbone.stage1.0.1.conv3.conv.weight': t,
             'backbone.stage1.0.1.block.conv1.conv1.rbr_dense.conv.weight': t,
             'backbone.stage4.1.conv3.conv.weight': t,  # CSPSPPF, not BepC3
             'neck.top_down_layers.0.0.conv2.bn.weight': t,
             'neck.top_down_layers.0.0.conv3.bn.weight': t,
             'neck.top_down_layers.0.0.block.block.0.alpha': t,
             'bbox_head.head_module.stems.0.conv.weight': t}
    mapped, unmapped, family = map_mmyolo(state)
    assert family == 'yolov6' and not unmapped
    assert sorted(mapped) == sorted([
        'backbone.ERBlock_2.1.cv1.conv.weight',
        'backbone.ERBlock_2.1.cv3.conv.weight',
        'backbone.ERBlock_2.1.m.conv1.conv1.rbr_dense.conv.weight',
        'backbone.ERBlock_5.2.cv3.conv.weight',
        'neck.Rep_p4.cv2.bn.weight', 'neck.Rep_p4.cv3.bn.weight',
        'neck.Rep_p4.m.block.0.alpha', 'bbox_head.stems.0.conv.weight'])


def test_tools_convert_an_official_release_on_the_fly(tmp_path, yolov6_n):
    """tools/test.py and tools/quantize.py accept an official .pt directly."""
    from mmengine.config import Config

    from detptq.engine.config_utils import resolve_checkpoint
    model, ref = yolov6_n
    tree = fakes.stand_in_tree(model, 'yolov6', {'bbox_head': 'detect'})
    src = tmp_path / 'yolov6n.pt'
    torch.save({'model': tree.half()}, src)
    fakes.remove_fake_modules('yolov6')
    cfg = Config.fromfile(cfg_path('yolov6_n'))
    cfg.work_dir = str(tmp_path / 'work')
    out = resolve_checkpoint(cfg, str(src))
    # the source's content digest is in the name: a replaced .pt is converted again
    from detptq.utils.fingerprint import file_digest
    assert out == str(tmp_path / 'work' / f'converted_yolov6n_{file_digest(str(src))[:12]}.pth')
    assert_same(outputs(load_converted(cfg_path('yolov6_n'), out)), ref)
    stamp = os.path.getmtime(out)
    assert resolve_checkpoint(cfg, str(src)) == out and os.path.getmtime(out) == stamp


# --------------------------------------------------- YOLOv6 QARepVGG v2 (v3 QA)
X64 = X.double()


def dense_boxes_scores(model: nn.Module):
    """Every prior's decoded box (input pixels) and class probabilities, float64."""
    from detptq.models.dense_heads.yolo_postprocess import anchor_points, dist2bbox
    head = model.bbox_head
    with torch.no_grad():
        cls, box = model(X64, mode='tensor')
        prob, ltrb = head.dense_outputs(cls, box)
    points, strides = anchor_points([c.shape[-2:] for c in cls], head.strides,
                                    X64.device, torch.float64)
    return dist2bbox(points, ltrb * strides), prob


@torch.no_grad()
def well_scaled_random_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights, then each BN's statistics set from its own input on the
    test image (as a trained model's fit its data): outputs stay O(1) and
    scores unsaturated, so the comparisons below are sensitive."""
    fakes.randomize_(model.eval(), seed)

    def fit_stats(bn, args):
        x = args[0].transpose(0, 1).flatten(1)
        bn.running_mean.copy_(x.mean(1))
        # +1: no channel is amplified (a dead ReLU channel would be by 1/sqrt(eps))
        bn.running_var.copy_(x.var(1, unbiased=False) + 1.0)

    hooks = [m.register_forward_pre_hook(fit_stats) for m in model.modules()
             if isinstance(m, nn.BatchNorm2d)]
    model(X, mode='tensor')  # eval mode: each BN fits the input it really gets
    for h in hooks:
        h.remove()
    return model


def save_official_qa_v2(path, size: str, fused: bool = False, seed: int = 0):
    """An official-style YOLOv6-<size> QA v2 release (FP16 pickle); the
    official-semantics float64 boxes/scores of the saved weights."""
    torch.manual_seed(seed)
    ours = well_scaled_random_(build_base_model(f'yolov6_{size}_qa'), seed)
    ours.half().double()  # the reference sees the FP16 weights the file holds
    official = fakes.swap_in_official_qa_v2(ours).eval()
    assert any(isinstance(m, fakes.QARepVGGBlockV2) for m in official.modules())
    ref = dense_boxes_scores(official)
    if fused:  # official deploy form: rbr_reparam + kept post-BN, saved in FP16
        for m in official.modules():
            if isinstance(m, fakes.QARepVGGBlockV2):
                m.official_switch_to_deploy()
        assert (dense_boxes_scores(official)[0] - ref[0]).abs().max().item() < 1e-6
        official.half().double()  # the fused kernels are what the file holds
        ref = dense_boxes_scores(official)
    tree = fakes.stand_in_tree(official, 'yolov6', {'bbox_head': 'detect'})
    torch.save({'model': tree.half(), 'ema': None, 'epoch': -1}, path)
    fakes.remove_fake_modules('yolov6')
    assert_not_importable('yolov6')
    return ref


def convert_cli(src, out, *extra):
    """Run tools/convert_ckpt.py's main() with argv; return its exit code."""
    spec = importlib.util.spec_from_file_location(
        'convert_ckpt_cli',
        os.path.join(MODEL_CFG_DIR, '..', '..', '..', 'tools', 'convert_ckpt.py'))
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    argv = sys.argv
    sys.argv = ['convert_ckpt.py', str(src), str(out), *map(str, extra)]
    try:
        cli.run_tool(cli.main)  # as `python tools/convert_ckpt.py` runs it
    except SystemExit as done:
        return done.code
    finally:
        sys.argv = argv


def load_converted64(path, deploy: bool, config: str = None) -> nn.Module:
    """The converted file in its recorded (or the given) config, float64."""
    ckpt = torch.load(path, map_location='cpu', weights_only=True)
    return load_converted(config or ckpt['meta']['config'], str(path),
                          deploy=deploy).double(), ckpt['meta']


@pytest.mark.parametrize('size,fused', [('n', False), ('s', False), ('m', False),
                                        ('n', True)])
def test_official_qa_v2_release_converts_without_config_exactly(tmp_path, size, fused):
    """Class names pick yolov6_<size>_qa.py (v2); boxes/scores match the official
    semantics to 1e-6 px in float64; the v1 block is >= 1e5 times further off."""
    src, out = tmp_path / f'yolov6{size}_qa.pt', tmp_path / 'converted.pth'
    ref_boxes, ref_scores = save_official_qa_v2(src, size, fused)
    assert convert_cli(src, out) == 0
    model, meta = load_converted64(out, deploy=fused)
    assert meta['config'].endswith(f'yolov6_{size}_qa.py')
    assert 'QARepVGGBlockV2' in meta['source_classes']
    assert 'QARepVGG v2' in meta['looks_like']
    boxes, scores = dense_boxes_scores(model)
    # training form: FP16 weights load exactly; fused form: detptq folds the
    # kept post-BN into the FP32 conv, so FP32 rounding of that fold remains
    tol = 1e-3 if fused else 1e-6
    assert (boxes - ref_boxes).abs().max().item() <= tol
    assert (scores - ref_scores).abs().max().item() <= tol
    if fused:
        assert any('post-BN' in why for why in meta['dropped_keys'].values())
    else:  # sensitivity: the same weights in the v1 block (no average pool)
        v1, _ = load_converted64(out, deploy=False, config=cfg_path(f'yolov6_{size}_qa_v1'))
        assert (dense_boxes_scores(v1)[0] - ref_boxes).abs().max().item() > 0.1


def test_qa_config_contradicting_the_class_names_is_refused(tmp_path, capsys):
    src = tmp_path / 'yolov6n_qa.pt'
    save_official_qa_v2(src, 'n')
    with pytest.raises(ConversionError) as err:
        convert_checkpoint(str(src), None, config=cfg_path('yolov6_n_qa_v1'))
    msg = str(err.value)
    assert msg.count('.') >= 1 and '\n' not in msg
    assert 'holds QARepVGGBlockV2 blocks' in msg and 'builds QARepVGGBlock blocks' in msg
    assert msg.endswith("yolov6_n_qa.py.")
    # the plain RepVGG config contradicts too, and the CLI says so in one line
    assert convert_cli(src, tmp_path / 'x.pth', '--config', cfg_path('yolov6_n')) == 2
    err_line = capsys.readouterr().err.strip()
    assert 'holds QARepVGGBlockV2 blocks' in err_line and 'builds RepVGGBlock' in err_line


def test_qa_v1_release_picks_the_v1_config(tmp_path):
    """An official QARepVGGBlock (v1) pickle converts into yolov6_n_qa_v1.py."""
    torch.manual_seed(0)
    model = fakes.randomize_(build_base_model('yolov6_n_qa_v1').eval())
    model.half().float()
    ref = outputs(model)
    tree = fakes.stand_in_tree(model, 'yolov6', {'bbox_head': 'detect'})
    src, out = tmp_path / 'v1.pt', tmp_path / 'v1.pth'
    torch.save({'model': tree.half()}, src)
    fakes.remove_fake_modules('yolov6')
    ckpt = convert_checkpoint(str(src), str(out))
    assert ckpt['meta']['config'].endswith('yolov6_n_qa_v1.py')
    assert_same(outputs(load_converted(ckpt['meta']['config'], str(out))), ref)


def test_qa_state_dict_without_class_names_needs_a_config(tmp_path):
    """Keys alone fit v1 and v2: no guess, one sentence naming both configs."""
    torch.manual_seed(0)
    model = build_base_model('yolov6_n_qa').eval()
    state = {('detect.' + k[len('bbox_head.'):] if k.startswith('bbox_head.') else k): v
             for k, v in model.state_dict().items()}
    src = tmp_path / 'qa_state.pth'
    torch.save(state, src)
    with pytest.raises(ConversionError) as err:
        convert_checkpoint(str(src), None)
    msg = str(err.value)
    assert 'fit both QARepVGG v1 and v2' in msg
    assert 'yolov6_n_qa.py' in msg and 'yolov6_n_qa_v1.py' in msg
    # with an explicit config it converts
    assert convert_checkpoint(str(src), None, config=cfg_path('yolov6_n_qa'))['meta'][
        'config'].endswith('yolov6_n_qa.py')
