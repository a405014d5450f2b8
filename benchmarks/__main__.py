"""``python -m benchmarks`` (see :mod:`benchmarks.run`) or ``python -m benchmarks throughput``
(see :mod:`benchmarks.throughput`)."""

import sys

if sys.argv[1:2] == ["throughput"]:
    from benchmarks.throughput import main

    sys.exit(main(sys.argv[2:]))

from benchmarks.run import main

sys.exit(main())
