from avloc.cli import main

raise SystemExit(main())
