"""scripts/fits_table.py lists every committed fit with how it was trained (the README's table)."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_committed_fit_has_a_row_with_its_training():
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "fits_table.py")], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout.splitlines()
    rows = [r for r in out[2:] if r.startswith("| ")]
    cards = sorted((ROOT / "assets" / "explainers").glob("*/*.json")) + sorted((ROOT / "assets" / "explainers").glob("samplers/*/*.json"))
    assert len(rows) == len(cards) > 0
    for r in rows:
        cells = [c.strip() for c in r.strip("|").split("|")]
        assert len(cells) == 8 and cells[3] not in ("", "?"), r  # training images known for every fit


def test_an_empty_folder_exits_2(tmp_path):
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "fits_table.py"), "--root", str(tmp_path)],
                       capture_output=True, text=True)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1
