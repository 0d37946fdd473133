"""Official YOLOv6 / YOLOv7 ``.pt`` and mmyolo checkpoints -> plain detptq checkpoints."""
from .convert import build_model, convert_checkpoint, map_source
from .read_source import ConversionError, SourceWeights, read_source
from .restricted_unpickler import (RestrictedUnpickler,
                                   RestrictedUnpicklingError, StandInModule,
                                   load_pickled_checkpoint)

__all__ = [
    'ConversionError', 'RestrictedUnpickler', 'RestrictedUnpicklingError',
    'SourceWeights', 'StandInModule', 'build_model', 'convert_checkpoint',
    'load_pickled_checkpoint', 'map_source', 'read_source'
]
