"""Experiments: one module per question, each measuring on the current host.

This package (and everything under it) imports only torch, numpy and the
standard library, so that ``python -m generator run`` works on a GPU host that
has nothing else installed. Importing the package itself does no work.
"""
