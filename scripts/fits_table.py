"""How every committed fit was trained, read from the fits' own cards (the JSON beside each weights
file): model, explainer, data, training images, batch, epochs or steps, seconds, and the command
that made it. Prints a Markdown table (the README's "How the committed fits were trained").

    .venv/bin/python scripts/fits_table.py [--root assets/explainers]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from explainers.data.digits import SPLIT_SIZES as DIGITS  # noqa: E402
from explainers.data.shapes import SPLIT_SIZES as SHAPES  # noqa: E402


def train_images(data: str, limit) -> str:
    sizes = {"digits": DIGITS, **SHAPES}.get(data)
    n = sizes["train"] if sizes else None
    if limit:
        return str(min(limit, n) if n else limit)
    return f"{n:,}" if n else "?"


def row(card_path: Path) -> list[str] | None:
    card = json.loads(card_path.read_text())
    cfg = card.get("config", {})
    data = card.get("dataset") or card.get("data") or "?"
    name = card_path.stem
    if card_path.parent.parent.name == "samplers":  # samplers/<data>/<name>.json: no model
        model = "—"
        images = str(card.get("images") or cfg.get("patches", "?"))
        if "patches" in cfg and not card.get("images"):
            images = f"{cfg['patches']:,} patches"
        batch = str(cfg.get("batch", "—"))
        schedule = f"{cfg['steps']} steps" if cfg.get("steps") else "closed form"
        init = card.get("init_from")
        if init:  # continued from an earlier fit (the fitter's init): its steps and command come first
            schedule = f"{init.get('steps_done', '?')} + {schedule} (continued)"
    else:
        model = card.get("model") or card_path.parent.name
        if name == "mipin":
            images = f"{card.get('n_samples', '?'):,}" if isinstance(card.get("n_samples"), int) else "?"
            images += f" × {cfg.get('positions')} positions" if cfg.get("positions") else ""
            schedule = "closed form (one pass)"
        else:
            images = train_images(data, cfg.get("limit"))
            steps = card.get("steps_run") or cfg.get("steps")
            schedule = (f"{cfg['epochs']} epochs ({steps} steps)" if cfg.get("epochs") else f"{steps} steps")
        batch = str(cfg.get("batch_size", "—"))
    secs = f"{card['seconds']:.0f}" if card.get("seconds") else "—"
    command = f"`{card['command']}`" if card.get("command") else "—"
    if card.get("init_from", {}).get("command"):  # the fit it continued, then the continuation
        secs, command = f"{secs} (continuation)", f"`{card['init_from']['command']}`, then {command}"
    return [model, name, data, images, batch, schedule, secs, command]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=ROOT / "assets" / "explainers")
    args = ap.parse_args(argv)
    cards = sorted(p for p in args.root.glob("*/*.json")) + sorted(args.root.glob("samplers/*/*.json"))
    rows = [r for r in (row(p) for p in cards) if r]
    if not rows:
        print(f"no fit cards under {args.root}", file=sys.stderr)
        return 2
    print("| model | fit | data | training images | batch | schedule | seconds | command |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
