"""detptq registries: children of mmdet's, so mmdet components resolve in detptq configs.

With ``default_scope = 'detptq'`` a config can name ``PackDetInputs`` (mmdet),
``CocoMetric`` (mmdet) and ``YOLODetector`` (detptq) without scope prefixes:
lookups try detptq first, then fall back to mmdet and mmengine.
"""
from mmdet.registry import DATA_SAMPLERS as MMDET_DATA_SAMPLERS
from mmdet.registry import DATASETS as MMDET_DATASETS
from mmdet.registry import HOOKS as MMDET_HOOKS
from mmdet.registry import LOOPS as MMDET_LOOPS
from mmdet.registry import METRICS as MMDET_METRICS
from mmdet.registry import MODELS as MMDET_MODELS
from mmdet.registry import OPTIM_WRAPPERS as MMDET_OPTIM_WRAPPERS
from mmdet.registry import PARAM_SCHEDULERS as MMDET_PARAM_SCHEDULERS
from mmdet.registry import TASK_UTILS as MMDET_TASK_UTILS
from mmdet.registry import TRANSFORMS as MMDET_TRANSFORMS
from mmdet.registry import VISUALIZERS as MMDET_VISUALIZERS
from mmengine.registry import Registry

MODELS = Registry('model', parent=MMDET_MODELS, scope='detptq',
                  locations=['detptq.models'])
TASK_UTILS = Registry('task util', parent=MMDET_TASK_UTILS, scope='detptq',
                      locations=['detptq.models'])
DATASETS = Registry('dataset', parent=MMDET_DATASETS, scope='detptq',
                    locations=['detptq.datasets'])
DATA_SAMPLERS = Registry('data sampler', parent=MMDET_DATA_SAMPLERS,
                         scope='detptq', locations=['detptq.datasets'])
TRANSFORMS = Registry('transform', parent=MMDET_TRANSFORMS, scope='detptq',
                      locations=['detptq.datasets'])
METRICS = Registry('metric', parent=MMDET_METRICS, scope='detptq')
HOOKS = Registry('hook', parent=MMDET_HOOKS, scope='detptq',
                 locations=['detptq.engine'])
LOOPS = Registry('loop', parent=MMDET_LOOPS, scope='detptq',
                 locations=['detptq.engine'])
OPTIM_WRAPPERS = Registry('optim_wrapper', parent=MMDET_OPTIM_WRAPPERS,
                          scope='detptq')
PARAM_SCHEDULERS = Registry('parameter scheduler',
                            parent=MMDET_PARAM_SCHEDULERS, scope='detptq')
VISUALIZERS = Registry('visualizer', parent=MMDET_VISUALIZERS, scope='detptq')

# The quantization parts have no OpenMMLab counterpart: they are roots.
QUANTIZERS = Registry('quantizer', scope='detptq',
                      locations=['detptq.quantization'])
CALIBRATORS = Registry('calibrator', scope='detptq',
                       locations=['detptq.quantization.calibrators'])
RECONSTRUCTORS = Registry('reconstructor', scope='detptq',
                          locations=['detptq.reconstruction'])

# mmdet registers its modules lazily, by its own scope; a lookup that falls
# back from our child registry would miss the ones not yet imported.
from mmdet.utils import register_all_modules  # noqa: E402

register_all_modules(init_default_scope=False)
