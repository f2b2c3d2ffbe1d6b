"""Models: the encoders (``avloc.models.encoders``) and one file per localisation method."""
