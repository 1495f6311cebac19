from quorumdb.cli import main

raise SystemExit(main())
