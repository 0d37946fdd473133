"""Turn a folder of PTQ runs (each with a result.json) into a COCO mAP table and chart.

    python tools/leaderboard.py work_dirs/ [more dirs...] --md board.md --csv board.csv
    python tools/leaderboard.py results/runs --aggregate --md results/demo_board.md \
        --csv results/demo_board.csv --png results/demo_board.png

Each argument is a run folder holding result.json or a folder searched
recursively for them. A ``run_spec.json`` next to a result.json (written by
tools/run_board.py) adds the run's split, seed and variant name.

Per run (default): one row per run, sorted by model, then bit widths, then
quantized mAP (best first). ``--aggregate``: one row per (model, method or
variant, bits, split) with the mean, sample standard deviation and number of
seeds. ``--png``: bar chart of the aggregated mean mAP with +-1 std error bars.
"""
import argparse
import csv
import glob
import json
import os.path as osp
import statistics
import sys
from typing import Dict, List, Optional, Tuple

COLUMNS = ['model', 'method', 'W/A', 'FP mAP', 'quant mAP', 'drop', 'AP50',
           'time (s)', 'run']
AGG_COLUMNS = ['model', 'method', 'W/A', 'split', 'n', 'FP mAP', 'mean mAP', 'std',
               'drop', 'mean AP50', 'mean time (s)', 'seeds']


def find_results(paths: List[str]) -> List[str]:
    """All result.json files in or below the given paths."""
    found = []
    for path in paths:
        if osp.isfile(path):
            found.append(path)
        elif osp.isfile(osp.join(path, 'result.json')):
            found.append(osp.join(path, 'result.json'))
        elif osp.isdir(path):
            found += sorted(glob.glob(osp.join(path, '**', 'result.json'),
                                      recursive=True))
        else:
            sys.exit(f'leaderboard: {path!r} is neither a run folder nor a result.json')
    return sorted(set(found))


def _run_spec(path: str) -> dict:
    """The run_spec.json beside a result.json (tools/run_board.py), or {}."""
    spec = osp.join(osp.dirname(path), 'run_spec.json')
    if not osp.isfile(spec):
        return {}
    with open(spec) as f:
        return json.load(f)


def row_of(path: str) -> dict:
    """One table row from one result.json."""
    with open(path) as f:
        res = json.load(f)
    spec = _run_spec(path)
    try:
        fp, q = res['fp_metrics'], res['quant_metrics']
        return {'model': res['model'], 'method': spec.get('variant') or res['method'],
                'W/A': f"W{res['w_bits']}A{res['a_bits']}",
                'FP mAP': fp.get('mAP'), 'quant mAP': q['mAP'],
                'drop': fp['mAP'] - q['mAP'] if 'mAP' in fp else None,
                'AP50': q.get('AP50'),
                'time (s)': res.get('wall_time_s'),
                'run': spec.get('name') or osp.basename(osp.dirname(osp.abspath(path))),
                'split': spec.get('split', ''),
                'seed': spec.get('seed', res.get('calib_seed')),
                '_bits': (res['w_bits'], res['a_bits'])}
    except KeyError as err:
        sys.exit(f'leaderboard: {path} has no key {err}; is it a detptq result.json?')


def _mean(values: List[Optional[float]]) -> Optional[float]:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def aggregate(rows: List[dict]) -> List[dict]:
    """One row per (model, method, bits, split): mean, sample std (None for n=1) and n."""
    groups: Dict[Tuple, List[dict]] = {}
    for row in rows:
        groups.setdefault((row['model'], row['method'], row['W/A'], row['split']),
                          []).append(row)
    out = []
    for (model, method, bits, split), members in groups.items():
        maps = [r['quant mAP'] for r in members]
        fp = _mean([r['FP mAP'] for r in members])
        mean = statistics.fmean(maps)
        out.append({'model': model, 'method': method, 'W/A': bits, 'split': split,
                    'n': len(maps), 'FP mAP': fp, 'mean mAP': mean,
                    'std': statistics.stdev(maps) if len(maps) > 1 else None,
                    'drop': fp - mean if fp is not None else None,
                    'mean AP50': _mean([r['AP50'] for r in members]),
                    'mean time (s)': _mean([r['time (s)'] for r in members]),
                    'seeds': ' '.join(str(r['seed']) for r in sorted(
                        members, key=lambda r: str(r['seed'])) if r['seed'] is not None),
                    '_bits': members[0]['_bits']})
    return sorted(out, key=lambda r: (r['model'], r['split'], -r['_bits'][0], -r['_bits'][1],
                                      -r['mean mAP']))


def fmt(value, column: str = '') -> str:
    """Numbers with 3 decimals (whole seconds for times), None as empty."""
    if value is None:
        return ''
    if 'time' in column and isinstance(value, (int, float)):
        return str(round(value))
    if isinstance(value, float):
        return f'{value:.3f}'
    return str(value)


def to_markdown(rows: List[dict], columns: List[str]) -> str:
    """A GitHub markdown table of the rows."""
    lines = ['| ' + ' | '.join(columns) + ' |',
             '|' + '---|' * len(columns)]
    for row in rows:
        lines.append('| ' + ' | '.join(fmt(row[c], c) for c in columns) + ' |')
    return '\n'.join(lines) + '\n'


def plot(groups: List[dict], png: str) -> None:
    """Grouped bars: one group per (model, bits, split), one bar per method, +-1 std."""
    import matplotlib
    matplotlib.use('Agg')  # no display on servers; must precede pyplot
    import matplotlib.pyplot as plt

    settings = list(dict.fromkeys((g['model'], g['W/A'], g['split']) for g in groups))
    methods = list(dict.fromkeys(g['method'] for g in groups))
    width = 0.8 / max(len(methods), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(settings) * max(len(methods), 1) / 3),
                                    4.5))
    cmap = plt.get_cmap('tab20')
    by_key = {(g['model'], g['W/A'], g['split'], g['method']): g for g in groups}
    for j, method in enumerate(methods):
        xs, ys, errs = [], [], []
        for i, setting in enumerate(settings):
            g = by_key.get(setting + (method,))
            if g is not None:
                xs.append(i + (j - (len(methods) - 1) / 2) * width)
                ys.append(g['mean mAP'])
                errs.append(g['std'] or 0.0)
        ax.bar(xs, ys, width=width, yerr=errs, capsize=2, color=cmap(j % 20), label=method)
    fps = {s: g['FP mAP'] for s in settings for g in groups
           if (g['model'], g['W/A'], g['split']) == s and g['FP mAP'] is not None}
    for i, setting in enumerate(settings):
        if setting in fps:
            ax.hlines(fps[setting], i - 0.45, i + 0.45, colors='k', linestyles='--',
                      linewidth=1, label='FP' if i == 0 else None)
    ax.set_xticks(range(len(settings)))
    ax.set_xticklabels([' '.join(x for x in s if x) for s in settings], fontsize=8)
    ax.set_ylabel('COCO mAP (mean, error bar: 1 std over seeds)')
    # Outside the axes: inside, it covered the first setting's bars.
    ax.legend(fontsize=7, loc='upper left', bbox_to_anchor=(1.005, 1.0))
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('paths', nargs='+', help='run folders or result.json files')
    parser.add_argument('--aggregate', action='store_true',
                        help='one row per (model, method, bits, split): mean, std, n')
    parser.add_argument('--md', help='write the markdown table here')
    parser.add_argument('--csv', help='write the CSV table here')
    parser.add_argument('--png', help='write a bar chart (mean mAP +- std) here')
    args = parser.parse_args()
    files = find_results(args.paths)
    if not files:
        sys.exit(f'leaderboard: no result.json under {args.paths}')
    rows = sorted((row_of(f) for f in files),
                  key=lambda r: (r['model'], -r['_bits'][0], -r['_bits'][1],
                                 -r['quant mAP']))
    groups = aggregate(rows)
    table_rows, columns = (groups, AGG_COLUMNS) if args.aggregate else (rows, COLUMNS)
    table = to_markdown(table_rows, columns)
    print(table, end='')
    if args.md:
        with open(args.md, 'w') as f:
            f.write(table)
    if args.csv:
        with open(args.csv, 'w', newline='') as f:
            writer = csv.DictWriter(f, columns, extrasaction='ignore')
            writer.writeheader()
            writer.writerows(table_rows)
    if args.png:
        plot(groups, args.png)


if __name__ == '__main__':
    from detptq.utils.cli import run_tool
    run_tool(main)
