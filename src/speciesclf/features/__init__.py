"""Features: MFCC extraction and standardisation (``mfcc``) and the feature arrays on disk (``store``)."""
