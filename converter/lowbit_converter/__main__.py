from lowbit_converter.cli import main

raise SystemExit(main())
