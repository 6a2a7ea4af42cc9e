from polytask.cli import main

raise SystemExit(main())
