"""Models: the study's CNNs (``cnn``), its losses (``losses``) and a trained model on disk (``saved``)."""
