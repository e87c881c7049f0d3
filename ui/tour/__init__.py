"""The teaching tour: the five papers' stories, one step at a time, each on a built-in example.

- ``steps.py``: the content — each step's text, the figures it mirrors, its classifier, image and
  settings (``STEPS``); no Streamlit.
- ``draw.py`` (with ``knobs.py`` for the knobs step and ``common.py`` for the shared plumbing):
  draws a step's figures; :func:`draw` is what the page calls.

The page (``pages/tour.py``) only picks a step and lays out its text beside ``draw(step, device)``.
Every step uses built-in samples, never the sidebar's upload, and picks its own classifier.
"""
from .draw import DRAW, draw
from .steps import KNOBS, STEPS, Step

__all__ = ["DRAW", "KNOBS", "STEPS", "Step", "draw"]
