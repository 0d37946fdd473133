"""Turn a folder of PTQ runs (each with a result.json) into a COCO mAP table.

    python tools/leaderboard.py work_dirs/ [more dirs...] --md board.md --csv board.csv

Each argument is a run folder holding result.json or a folder searched
recursively for them. Rows are sorted by model, then bit widths, then
quantized mAP (best first).
"""
import argparse
import csv
import glob
import json
import os.path as osp
import sys
from typing import List

COLUMNS = ['model', 'method', 'W/A', 'FP mAP', 'quant mAP', 'drop', 'AP50',
           'time (s)', 'run']


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


def row_of(path: str) -> dict:
    """One table row from one result.json."""
    with open(path) as f:
        res = json.load(f)
    try:
        fp, q = res['fp_metrics'], res['quant_metrics']
        return {'model': res['model'], 'method': res['method'],
                'W/A': f"W{res['w_bits']}A{res['a_bits']}",
                'FP mAP': fp['mAP'], 'quant mAP': q['mAP'],
                'drop': fp['mAP'] - q['mAP'], 'AP50': q.get('AP50'),
                'time (s)': res.get('wall_time_s'),
                'run': osp.basename(osp.dirname(osp.abspath(path))),
                '_bits': (res['w_bits'], res['a_bits'])}
    except KeyError as err:
        sys.exit(f'leaderboard: {path} has no key {err}; is it a detptq result.json?')


def fmt(value) -> str:
    """Numbers with 3 decimals (1 for seconds), others as they are."""
    if isinstance(value, float):
        return f'{value:.3f}'
    return '' if value is None else str(value)


def to_markdown(rows: List[dict]) -> str:
    """A GitHub markdown table of the rows."""
    lines = ['| ' + ' | '.join(COLUMNS) + ' |',
             '|' + '---|' * len(COLUMNS)]
    for row in rows:
        cells = [fmt(round(row[c])) if c == 'time (s)' and row[c] is not None
                 else fmt(row[c]) for c in COLUMNS]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('paths', nargs='+', help='run folders or result.json files')
    parser.add_argument('--md', help='write the markdown table here')
    parser.add_argument('--csv', help='write the CSV table here')
    args = parser.parse_args()
    files = find_results(args.paths)
    if not files:
        sys.exit(f'leaderboard: no result.json under {args.paths}')
    rows = sorted((row_of(f) for f in files),
                  key=lambda r: (r['model'], -r['_bits'][0], -r['_bits'][1],
                                 -r['quant mAP']))
    table = to_markdown(rows)
    print(table, end='')
    if args.md:
        with open(args.md, 'w') as f:
            f.write(table)
    if args.csv:
        with open(args.csv, 'w', newline='') as f:
            writer = csv.DictWriter(f, COLUMNS, extrasaction='ignore')
            writer.writeheader()
            writer.writerows(rows)


if __name__ == '__main__':
    from detptq.utils.cli import run_tool
    run_tool(main)
