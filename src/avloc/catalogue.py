"""What ``avloc --help``, ``avloc models`` and ``avloc encoders`` show, without importing torch.

Importing torch takes seconds, and reading the live registries means importing every model
and encoder (and building them). These tables are copies of what the live code answers;
tests/test_catalogue.py checks them against it (``describe_model`` for every registered model,
``create_encoder`` for every encoder, the devices), so they cannot drift apart unnoticed. A new
model or encoder goes in here too, or that test fails.
"""

from __future__ import annotations

_STEPWISE = "it has no step-by-step form (its outputs at a step depend on the whole clip)"
_AVE_PAPER = 'Tian, Shi, Li, Duan, Xu. "Audio-Visual Event Localization in Unconstrained Videos", ECCV 2018'

# avloc.models._registry.describe_model(name) for every name of avloc.models.list_models(), in that order.
MODELS: tuple[dict, ...] = (
    {"name": "avdln", "paper": f"{_AVE_PAPER} (section 5)", "supervisions": ("segment", "self"),
     "classifier": False, "streams": None},
    {"name": "ave", "paper": f"{_AVE_PAPER} (section 4)", "supervisions": ("segment", "video"),
     "classifier": True, "streams": _STEPWISE},
    {"name": "avfb", "paper": 'Ramaswamy, Das. "See the Sound, Hear the Pixels", WACV 2020',
     "supervisions": ("segment", "video", "self"), "classifier": True, "streams": _STEPWISE},
    {"name": "dmrfe", "paper": f"{_AVE_PAPER} (section 4)", "supervisions": ("segment", "video"),
     "classifier": True, "streams": _STEPWISE},
    {"name": "ezvsl", "paper": 'Mo, Morgado. "Localizing Visual Sounds the Easy Way", ECCV 2022',
     "supervisions": ("self",), "classifier": False, "streams": None},
    {"name": "stm", "paper": 'Li, Tian, Xu. "Space-Time Memory Network for Sounding Object Localization in '
     'Videos", BMVC 2021', "supervisions": ("video", "segment"), "classifier": True, "streams": None},
    {"name": "tavlo", "paper": 'Choi, Lee, Kwak. "What\'s Making That Sound Right Now? Video-centric '
     'Audio-Visual Localization", ICCV 2025', "supervisions": ("self",), "classifier": False,
     "streams": _STEPWISE},
)

# (name, modality, out_channels) of avloc.models.encoders.create_encoder(name) for every name of list_encoders().
ENCODERS: tuple[tuple[str, str, int], ...] = (
    ("resnet18", "visual", 512),
    ("resnet50", "visual", 2048),
    ("resnet152", "visual", 2048),
    ("vgg19", "visual", 512),
    ("small-visual", "visual", 128),
    ("vggish", "audio", 512),
    ("vggish-embed", "audio", 128),
    ("small-audio", "audio", 128),
)

# avloc.devices.DEVICE_CHOICES: the --device flag's choices.
DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")

# avloc.data.cache.STORAGES: the choices of `avloc extract --storage`, the default first.
STORAGE_CHOICES = ("rounded", "float16", "float32")


def format_models() -> str:
    """The ``avloc models`` listing: per model its paper, supervisions, whether it names the
    event class and whether it streams."""
    blocks = []
    for model in MODELS:
        streams = "yes" if model["streams"] is None else f"no: {model['streams']}"
        classes = "yes" if model["classifier"] else "no (heat maps only)"
        blocks.append(f"{model['name']}\n  paper:       {model['paper']}\n"
                      f"  supervision: {', '.join(model['supervisions'])}\n"
                      f"  localises:   yes (a heat map per step)\n  event class: {classes}\n  streams:     {streams}")
    return "\n".join(blocks)


def format_encoders() -> str:
    """The ``avloc encoders`` listing: name, modality and output channels of each encoder."""
    return "\n".join(f"{name:14s} {modality:7s} {channels:5d} channels" for name, modality, channels in ENCODERS)
