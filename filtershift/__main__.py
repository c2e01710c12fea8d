from filtershift.cli import main

raise SystemExit(main())
