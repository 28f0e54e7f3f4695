"""One sub-package per wire protocol."""
