"""speciesclf: classify animal species from their sounds.

The library behind the DVC pipeline. It imports neither dvc nor dvclive, so it runs anywhere torch does.
"""

__version__ = "0.1.0"
