"""Evaluation: long-tail metrics (``metrics``), scoring a trained model (``evaluate``), the study's report
(``report``) and the Markdown the reports share (``markdown``)."""
