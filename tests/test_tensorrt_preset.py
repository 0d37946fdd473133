"""quant_cfg.backend='tensorrt' (configs/_base_/ptq/tensorrt.py): a run made with it exports clean."""
import json

import pytest

from detptq.quantization.qconfig import merge_qcfg
from test_ptq_pipeline import ROOT, run_quantize, tiny_setup  # noqa: F401 (fixture)


def test_backend_preset_sets_symmetric_acts_and_per_tensor_transposed_convs() -> None:
    merged = merge_qcfg(dict(backend='tensorrt', overrides=[dict(pattern='x', a_bits=8)]))
    assert merged['act']['symmetric'] is True and merged['act']['unsigned'] is False
    first = merged['overrides'][0]
    assert '*upsample*' in first['pattern'] and first['weight'] == dict(per_channel=False)
    assert merged['overrides'][1] == dict(pattern='x', a_bits=8)  # the user's come after
    assert merge_qcfg(merged)['overrides'] == merged['overrides']  # merging twice adds nothing
    with pytest.raises(ValueError, match="backend='tensorrtx' is invalid"):
        merge_qcfg(dict(backend='tensorrtx'))
    with pytest.raises(ValueError, match='act.symmetric=False'):
        merge_qcfg(dict(backend='tensorrt',
                        overrides=[dict(pattern='*', act=dict(symmetric=False))]))


def test_minmax_trt_demo_config_exports_without_tensorrt_violations(tiny_setup,  # noqa: F811
                                                                     tmp_path) -> None:
    import sys
    tmp, data, ckpt = tiny_setup
    proc = run_quantize(tmp, data, ckpt, 'configs/demo/yolov6n_demo_minmax_w8a8_trt.py', 'trt')
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp / 'trt' / 'result.json').read_text())
    assert result['quant_cfg']['backend'] == 'tensorrt'
    sys.path.insert(0, str(ROOT / 'tools'))
    try:
        from export_onnx import main
    finally:
        sys.path.pop(0)
    out = tmp_path / 'trt.onnx'
    assert main([str(tmp / 'trt.py'), '--checkpoint', str(tmp / 'trt' / 'quantized.pth'),
                 '--out', str(out)]) == 0
    summary = json.loads(out.with_name('trt.onnx.json').read_text())
    assert summary['tensorrt_issues'] == []
