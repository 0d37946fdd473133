"""tools/leaderboard.py turns result.json files into sorted markdown and CSV tables."""
import csv
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def write_run(folder: Path, method: str, w: int, a: int, fp: float, q: float) -> None:
    folder.mkdir(parents=True)
    (folder / 'result.json').write_text(json.dumps(dict(
        model='yolov6n_demo', method=method, w_bits=w, a_bits=a,
        fp_metrics=dict(mAP=fp, AP50=0.9), quant_metrics=dict(mAP=q, AP50=0.8),
        wall_time_s=12.3)))


def test_leaderboard_sorts_and_writes_tables(tmp_path) -> None:
    write_run(tmp_path / 'a', 'minmax', 4, 8, 0.6, 0.40)
    write_run(tmp_path / 'b', 'detptq', 4, 8, 0.6, 0.55)
    write_run(tmp_path / 'c', 'minmax', 8, 8, 0.6, 0.59)
    md, out_csv = tmp_path / 'board.md', tmp_path / 'board.csv'
    proc = subprocess.run([sys.executable, str(ROOT / 'tools/leaderboard.py'),
                           str(tmp_path), '--md', str(md), '--csv', str(out_csv)],
                          capture_output=True, text=True, check=True)
    lines = md.read_text().splitlines()
    assert proc.stdout.splitlines() == lines
    assert lines[0].startswith('| model | method | W/A')
    # W8A8 first, then W4A8 rows best-first
    assert [line.split(' | ')[1] for line in lines[2:]] == ['minmax', 'detptq', 'minmax']
    assert '| 0.200 |' in lines[4]  # drop = 0.6 - 0.40
    rows = list(csv.DictReader(out_csv.open()))
    assert [r['method'] for r in rows] == ['minmax', 'detptq', 'minmax']
    assert abs(float(rows[1]['drop']) - 0.05) < 1e-9


def test_leaderboard_rejects_a_missing_path(tmp_path) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / 'tools/leaderboard.py'),
                           str(tmp_path / 'nope')], capture_output=True, text=True)
    assert proc.returncode != 0 and 'nope' in proc.stderr
