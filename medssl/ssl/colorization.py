"""Colourisation (Zhang et al. 2016, "Colorful Image Colorization") is REFUSED: there is no colour.

Colourisation as a pretext task feeds the lightness channel L of a colour image and trains the
network to predict the two chroma channels (ab in CIE Lab): the target is the colour the input
lacks. Every modality medssl reads (`data.modality`: xray, ct, mr) is single-channel grayscale:
a radiograph's pixel is an attenuation, a CT voxel a Hounsfield unit, an MR voxel a signal
intensity. There is no chroma to remove and predict, so the task has no target: it is undefined,
not merely weak. (Pseudo-colour renderings, e.g. a LUT applied to a CT, are a fixed function of
the grey value and would make the "prediction" trivial.) This module holds no torch code so the
config check can import it; `medssl.config` refuses the method at load time and
`medssl.ssl.registry.build_method` at build time, both through `refuse_colorization`.
"""

from __future__ import annotations

from medssl.errors import ConfigError

#: medssl's modalities, all single-channel grayscale.
GRAYSCALE_MODALITIES = ("xray", "ct", "mr")
NAMES = ("colorization", "colourisation")


def refusal_message(name: str = "colorization", modality: str | None = None) -> str:
    where = f"data.modality {modality}" if modality else f"every medssl modality ({', '.join(GRAYSCALE_MODALITIES)})"
    return (f"ssl.method: {name} is refused for grayscale images ({where}): colourisation predicts the colour "
            "(chroma) channels of an image from its lightness, and a single-channel radiograph, CT or MR image "
            "has no colour to predict, so the task is undefined. Use a pretext task that exists for grayscale "
            "images: rotation, jigsaw, inpainting, or mae (with model.arch vit_*).")


def refuse_colorization(name: str = "colorization", modality: str | None = None) -> None:
    """Raise the ConfigError explaining why colourisation cannot be a pretext task here (always)."""
    raise ConfigError(refusal_message(name, modality))
