from p2p_desktop.cli.main import main

raise SystemExit(main())
