"""Training: its settings (``config``), the loop (``trainer``), data-parallel processes (``distributed``) and one run
of the study from features to a trained model (``run``)."""
