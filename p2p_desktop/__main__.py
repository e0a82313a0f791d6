"""``python -m p2p_desktop``: the same command line as ``p2p-desktop``."""

from p2p_desktop.cli.main import main

raise SystemExit(main())
