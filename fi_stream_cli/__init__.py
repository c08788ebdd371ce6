"""The `fi-stream` command line: thin wrappers around the services."""
