"""Models: the encoders (``avloc.models.encoders``) and one file per localisation method.

>>> model = create_model("stm", visual_channels=2048, audio_channels=512, num_classes=29)  # doctest: +SKIP
"""

from avloc.models._registry import create_model, list_models, register_model
from avloc.models.stm import STM  # importing a model module registers its builders

__all__ = ["STM", "create_model", "list_models", "register_model"]
