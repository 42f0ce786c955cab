"""Session recordings: append-only files, keyframes, search, replay. No sibling imports."""
