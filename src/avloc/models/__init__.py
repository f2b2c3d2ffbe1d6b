"""Models: the encoders (``avloc.models.encoders``) and one file per localisation method.

>>> model = create_model("stm", visual_channels=2048, audio_channels=512, num_classes=29)  # doctest: +SKIP
"""

from avloc.models import ave, avdln, avfb, ezvsl, tavlo  # noqa: F401  importing registers the builders
from avloc.models._registry import create_model, list_models, model_accepts, register_model
from avloc.models.stm import STM

__all__ = ["STM", "create_model", "list_models", "model_accepts", "register_model"]
