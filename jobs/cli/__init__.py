"""The ``facerec`` command line. ``jobs.cli.main`` assembles every command; nothing else in
the product imports this package."""
