"""One module per `tilefleet` command; each exposes `register(subparsers)`."""
