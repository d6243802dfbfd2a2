"""``python -m course.scaling shapes|hornets``, started by torchrun: course.scaling.programs."""

import sys

from course.scaling.programs import main

main(sys.argv[1:])
