"""The site side: results in, HTML out (mkdocs hook, Jinja, figures, KaTeX, print pages)."""
