"""``python -m trainers.cli`` (as ``accelerate launch -m trainers.cli``): the ``cl3mrec`` command line."""

import sys

from trainers.cli import main

sys.exit(main())
