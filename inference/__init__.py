"""ModelDeck inference service: serves the promoted version of one PyTorch model.

Entry point: ``python -m inference`` (see docs/inference.md).
"""
