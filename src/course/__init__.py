"""course: the shared package of the deep-CNN course book.

Every notebook imports it. Infrastructure lives in a few modules
(`config`, `utils`, `train`, `plots`, `data`); each chapter has a module
named after what it teaches.
"""

from course.config import pick, profile, run_seed
from course.utils import count_parameters, get_device, seed_everything

__version__ = "0.1.0"

__all__ = ["count_parameters", "get_device", "pick", "profile", "run_seed", "seed_everything"]
