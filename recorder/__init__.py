"""Session recorder (see issue 4); nothing is recorded yet."""
