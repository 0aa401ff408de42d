"""Evaluation: long-tail metrics (``metrics``), scoring a trained model (``evaluate``) and the study's report
(``report``)."""
