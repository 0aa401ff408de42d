"""Features: their settings and per-band standardisation (``config``), the front ends (``mfcc``, ``frontends``,
``birdnet``) and the feature arrays on disk (``store``)."""
