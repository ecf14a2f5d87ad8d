"""What every course notebook does first, in one call: its profile, its seed, the figures' theme
and its data."""
from __future__ import annotations

import seaborn as sns

from dyninf.data.cifar import ImageDataset
from dyninf.training.loop import seed_everything
from dyninf.course.profiles import Profile, get_profile


def start_notebook(profile: str, seed: int = 0, load_data: bool = True) -> tuple[Profile, ImageDataset | None]:
    """The profile called ``profile`` with training seed ``seed`` (on CUDA when present), every
    random generator seeded with it, the course's figure theme set, and the profile's data set
    (None with ``load_data=False``: notebook 00 loads it step by step)."""
    chosen = get_profile(profile, seed=seed)
    seed_everything(chosen.seed)
    sns.set_theme(style="whitegrid", context="notebook")
    return chosen, chosen.load_data() if load_data else None
