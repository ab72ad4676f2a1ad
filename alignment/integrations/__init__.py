"""Integrations with other training frameworks, each an optional extra:
:mod:`alignment.integrations.lightning` (PyTorch Lightning; ``pip install
"feedback-alignment[lightning]"``)."""
