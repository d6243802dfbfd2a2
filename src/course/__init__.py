"""course: the shared package of the deep-CNN course book.

Every notebook imports it. The shared floor, which every chapter may import:
`config`, `utils`, `train`, `runstate`, `distributed`, `check`, `plots`, `data`,
`models`, `weights` and `pretrained` (book/chapters.yml says what each holds). Each
chapter has a module named after what it teaches, and no chapter module imports
another's.
"""

from course.config import pick, profile, run_seed
from course.utils import count_parameters, get_device, seed_everything

__version__ = "0.1.0"

__all__ = ["count_parameters", "get_device", "pick", "profile", "run_seed", "seed_everything"]
