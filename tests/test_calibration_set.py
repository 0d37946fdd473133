"""CalibrationSet: mmengine data batches become model inputs in one place, with the image ids."""
import pytest
import torch
from mmdet.models.data_preprocessors import DetDataPreprocessor
from mmdet.structures import DetDataSample

from detptq.quantization.calibration_set import CalibrationSet


def data_batches(num_batches=3, batch_size=2, size=8):
    """mmengine-style data batches of uint8 images with img_id / img_path metainfo."""
    gen = torch.Generator().manual_seed(0)
    batches = []
    for b in range(num_batches):
        ids = range(b * batch_size, (b + 1) * batch_size)
        batches.append(dict(
            inputs=[torch.randint(0, 256, (3, size, size), generator=gen, dtype=torch.uint8)
                    for _ in ids],
            data_samples=[DetDataSample(metainfo=dict(img_id=10 + i, img_path=f'/d/img_{i}.jpg'))
                          for i in ids]))
    return batches


class Loader(list):
    """A list of batches with a data loader's ``batch_size``."""
    batch_size = 2


def test_from_loader_preprocesses_like_the_model_and_keeps_ids():
    pre = DetDataPreprocessor(mean=[0., 0., 0.], std=[255., 255., 255.], bgr_to_rgb=True)
    batches = data_batches()
    calib = CalibrationSet.from_loader(Loader(batches), pre, num_images=3)  # whole batches: 4
    assert len(calib) == 2 and calib.num_images == 4
    assert calib.image_ids == tuple((10 + i, f'img_{i}.jpg') for i in range(4))
    for got, batch in zip(calib, batches):
        assert torch.equal(got, pre(batch, False)['inputs'])
        assert got.dtype == torch.float32 and got.shape == (2, 3, 8, 8)

    cut = calib.first(3)
    assert [b.shape[0] for b in cut] == [2, 1] and cut.image_ids == calib.image_ids[:3]
    assert torch.equal(cut[1], calib[1][:1])
    whole = calib.first(3, whole_batches=True)
    assert [b.shape[0] for b in whole] == [2, 2] and whole.num_images == 4
    assert calib.first(None) is calib


def test_of_takes_model_inputs_and_refuses_unprocessed_data_batches():
    tensors = [torch.randn(2, 3, 4, 4), torch.randn(1, 3, 4, 4)]
    calib = CalibrationSet.of(iter(tensors))
    assert len(calib) == 2 and calib.num_images == 3 and calib.image_ids == ()
    assert all(a is b for a, b in zip(calib, tensors))
    assert CalibrationSet.of(calib) is calib
    assert len(CalibrationSet.of(calib, num_batches=1)) == 1
    assert len(CalibrationSet.of(iter(tensors * 5), num_batches=3)) == 3
    with pytest.raises(TypeError, match='CalibrationSet.from_loader'):
        CalibrationSet.of(data_batches())
