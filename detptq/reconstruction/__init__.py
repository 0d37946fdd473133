"""Reconstruction: AdaRound, BRECQ/QDrop block reconstruction and the DetPTQ p search.

Entry points (details in each module's docstring):

- ``partition_units(model_q, 'block'|'layer')``            -> [(name, module)]
- ``reconstruct(model_fp, model_q, units, calib, ReconConfig(...))``
- ``search_p(model_q, calib, dense_fn)`` / ``apply_p_search`` / ``unit_p_map``
- registry ``RECONSTRUCTORS``: ``BlockReconstructor`` (mode 'brecq'|'qdrop'|'layer'),
  ``AdaRoundReconstructor``, ``BRECQReconstructor``, ``QDropReconstructor``,
  ``DetPTQReconstructor``
- building blocks: ``AdaRoundQuantizer``, ``LinearTempDecay``, ``LpLoss``, ``ODOL``,
  ``UnitDataCache``
"""
from .adaround import AdaRoundQuantizer, LinearTempDecay
from .block_reconstruction import float_reference, reconstruct
from .data_cache import UnitDataCache
from .lp_loss import LpLoss
from .odol import ODOL
from .p_search import (P_CANDIDATES, PSearchConfig, apply_p_search, default_dense_fn,
                       search_p, unit_p_map)
from .p_search_report import load_p_search, plot_p_search, save_p_search
from .partition import ChainUnit, partition_units, quant_layers
from .recon_config import ReconConfig
from .reconstructors import (AdaRoundReconstructor, BlockReconstructor, BRECQReconstructor,
                             DetPTQReconstructor, QDropReconstructor)

__all__ = [
    'AdaRoundQuantizer', 'LinearTempDecay', 'LpLoss', 'ODOL', 'UnitDataCache', 'ChainUnit',
    'partition_units', 'quant_layers', 'ReconConfig', 'reconstruct', 'float_reference',
    'P_CANDIDATES', 'PSearchConfig', 'search_p', 'apply_p_search', 'unit_p_map',
    'default_dense_fn', 'save_p_search', 'load_p_search', 'plot_p_search',
    'BlockReconstructor', 'AdaRoundReconstructor', 'BRECQReconstructor', 'QDropReconstructor',
    'DetPTQReconstructor'
]
