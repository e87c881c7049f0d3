"""The Streamlit side of the explorer (the engine, ``explainers``, never imports it).

- ``sidebar``: the shared sidebar (classifier, image, device); ``page``: the scaffold every page
  uses (the prologue, the progress runner, one-line errors, engine calls beyond ``cache``);
- ``cache``: cached engine calls keyed on plain values; ``widgets``: inputs built from a method's
  config metadata, the PMI controls, the class picker; ``grid``: the comparison grid;
- ``plots*``: figures only (no widgets, no engine runs); ``tour/``: the teaching tour's steps
  (content) and their drawing.
"""
