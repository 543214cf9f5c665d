from metacompare.cli import main

raise SystemExit(main())
