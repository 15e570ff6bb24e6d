"""Looking at search trees (``rftt show``): validate a tree file, render it for a terminal or HTML."""
