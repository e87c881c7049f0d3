"""The Streamlit side of the explorer (the engine, ``explainers``, never imports it).

- ``sidebar``: the shared sidebar (classifier, image, device); ``page``: the scaffold every page
  uses (the prologue, the progress runner, one-line errors, engine calls beyond ``cache``);
- ``cache``: cached engine calls keyed on plain values; ``work``: the one rule for long work
  (estimate, a click for long work, progress with the time left, Stop, results kept);
  ``widgets``: inputs built from a method's config metadata (kept across pages), the PMI
  controls, the class picker; ``grid``: the comparison grid and its exports;
- ``plots*``: figures only (no widgets, no engine runs); ``tour/``: the teaching tour's steps
  (content) and their drawing.
"""
