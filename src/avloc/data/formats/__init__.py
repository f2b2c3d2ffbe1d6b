"""The field's dataset files (AVE, AudioSet-Instrument, VGG-SS, Flickr-SoundNet, AVATAR, the STM
authors' CVAT boxes): readers, finding their videos, ``avloc datasets convert`` and ``check``."""
