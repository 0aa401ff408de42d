"""Models: the study's CNNs (``cnn``), its losses (``losses``), a trained model on disk (``saved``) and a network
applied to windows (``inference``)."""
