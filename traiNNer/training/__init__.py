"""Pieces of the training loop that train.py composes."""
