"""Saving, loading and plotting DetPTQ p-search results (JSON + PNG bar chart)."""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional

from detptq.utils.io import write_json_atomic

Results = Dict[str, Dict[str, Dict[str, Any]]]


def save_p_search(results: Results, json_path: str, png_path: Optional[str] = None,
                  meta: Optional[Dict[str, Any]] = None) -> None:
    """Write ``{'meta': ..., 'layers': results}`` as JSON and, optionally, the p* bar chart."""
    write_json_atomic(dict(meta=meta or {}, layers=results), json_path, indent=1)
    if png_path:
        plot_p_search(results, png_path)


def load_p_search(json_path: str) -> Dict[str, Any]:
    """``{'meta': ..., 'layers': results}`` as written by ``save_p_search``."""
    with open(json_path) as f:
        return json.load(f)


def plot_p_search(results: Results, png_path: str) -> None:
    """Bar chart of the chosen p per layer (weights and activations side by side)."""
    import matplotlib
    matplotlib.use('Agg')  # no display on servers; must precede pyplot
    import matplotlib.pyplot as plt

    names = list(results)
    width = 0.4
    fig, ax = plt.subplots(figsize=(max(6.0, 0.22 * len(names) + 2), 4.0))
    for offset, kind, color in ((-width / 2, 'weight', 'tab:blue'), (width / 2, 'act', 'tab:orange')):
        xs = [i + offset for i, n in enumerate(names) if kind in results[n]]
        ps = [results[n][kind]['p'] for n in names if kind in results[n]]
        if xs:
            ax.bar(xs, ps, width=width, color=color, label=f'{kind} p*')
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=90, fontsize=6)
    ax.set_ylabel('p* (argmin ODOL)')
    ax.set_ylim(0, 5)
    ax.set_title('DetPTQ: ODOL-optimal Lp exponent per layer')
    ax.legend(loc='upper right', fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(png_path)), exist_ok=True)
    fig.savefig(png_path, dpi=120)
    plt.close(fig)
