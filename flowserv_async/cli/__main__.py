"""``python -m flowserv_async.cli``."""

from flowserv_async.cli.app import main

main()
