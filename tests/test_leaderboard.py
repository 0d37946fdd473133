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


def write_seed_run(root: Path, name: str, method: str, seed: int, q: float,
                   w: int = 4, a: int = 8, split: str = 'val') -> None:
    folder = root / name
    write_run(folder, method, w, a, 0.6, q)
    (folder / 'run_spec.json').write_text(json.dumps(dict(
        name=name, seed=seed, split=split, variant=None)))


def test_aggregate_gives_mean_std_n_per_method_and_bits_and_a_png(tmp_path) -> None:
    runs = tmp_path / 'runs'
    for seed, q in enumerate((0.50, 0.52, 0.57)):
        write_seed_run(runs, f'brecq_s{seed}', 'brecq', seed, q)
    for seed, q in enumerate((0.55, 0.55)):
        write_seed_run(runs, f'detptq_s{seed}', 'detptq', seed, q)
    write_seed_run(runs, 'detptq_w8', 'detptq', 0, 0.59, w=8, a=8)
    write_seed_run(runs, 'detptq_tune', 'detptq', 0, 0.40, split='tune')
    md, out_csv, png = tmp_path / 'b.md', tmp_path / 'b.csv', tmp_path / 'b.png'
    subprocess.run([sys.executable, str(ROOT / 'tools/leaderboard.py'), str(runs),
                    '--aggregate', '--md', str(md), '--csv', str(out_csv), '--png', str(png)],
                   capture_output=True, text=True, check=True)
    rows = {(r['method'], r['W/A'], r['split']): r for r in csv.DictReader(out_csv.open())}
    assert len(rows) == 4
    brecq = rows[('brecq', 'W4A8', 'val')]
    assert int(brecq['n']) == 3
    assert abs(float(brecq['mean mAP']) - 0.53) < 1e-9
    # sample std of 0.50, 0.52, 0.57: deviations -0.03, -0.01, 0.04 -> sqrt(0.0026 / 2)
    assert abs(float(brecq['std']) - 0.0013 ** 0.5) < 1e-9
    assert abs(float(brecq['drop']) - 0.07) < 1e-9 and brecq['seeds'] == '0 1 2'
    detptq = rows[('detptq', 'W4A8', 'val')]
    assert int(detptq['n']) == 2 and float(detptq['std']) == 0.0
    single = rows[('detptq', 'W8A8', 'val')]
    assert int(single['n']) == 1 and single['std'] == ''  # no std from one seed
    assert float(rows[('detptq', 'W4A8', 'tune')]['mean mAP']) == 0.40  # splits never mix
    lines = md.read_text().splitlines()
    assert lines[0].startswith('| model | method | W/A | split | n |')
    assert '| 0.530 | 0.036 |' in md.read_text()
    assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n' and png.stat().st_size > 5000
