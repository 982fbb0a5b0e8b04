"""skimage.data's sample photographs, typed (skimage ships its loaders unannotated)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def sample(name: str) -> npt.NDArray[np.uint8]:
    """The skimage.data photo `name` (astronaut, chelsea, coffee, rocket, ...), as its loader gives it."""
    import skimage.data

    image = getattr(skimage.data, name)()
    assert isinstance(image, np.ndarray) and image.dtype == np.uint8, (name, type(image))
    return image
