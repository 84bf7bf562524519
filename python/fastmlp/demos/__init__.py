"""Demos that ``fastmlp demo`` runs; each module computes and draws, and prints nothing
(the command line prints). The article's demo lives in cli.py; :mod:`.deep` is
``fastmlp demo deep``."""
