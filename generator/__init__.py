"""The handbook generator: runs experiments, then renders their results.

``generator.runner`` and what it imports use only the standard library (the
experiments themselves use torch and numpy), so ``python -m generator run``
works on a GPU host with nothing else installed. ``generator.site`` and
``generator.pdf`` need the site dependencies (mkdocs, jinja2, matplotlib).
"""
