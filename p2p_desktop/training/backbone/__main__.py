"""``python -m p2p_desktop.training.backbone``."""

import sys

from p2p_desktop.training.backbone.cli import main

sys.exit(main())
