from newsq.workers.cli import main

raise SystemExit(main())
