"""Session recordings: append-only files, pyte keyframes, search, replay. Depends on no sibling package."""
