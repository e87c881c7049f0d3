"""scripts/fits_table.py lists every committed fit with how it was trained (the README's table)."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_committed_fit_has_a_row_with_its_training(capsys, script):
    assert script("fits_table").main([]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = [r for r in out[2:] if r.startswith("| ")]
    cards = sorted((ROOT / "assets" / "explainers").glob("*/*.json")) + sorted((ROOT / "assets" / "explainers").glob("samplers/*/*.json"))
    assert len(rows) == len(cards) > 0
    for r in rows:
        cells = [c.strip() for c in r.strip("|").split("|")]
        assert len(cells) == 8 and cells[3] not in ("", "?"), r  # training images known for every fit


def test_an_empty_folder_exits_2(tmp_path, capsys, script):
    assert script("fits_table").main(["--root", str(tmp_path)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
